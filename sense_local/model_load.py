"""Loading a GGUF with llama.cpp, its layers optionally on other machines' RPC workers (rpc.py)."""
from __future__ import annotations

from pathlib import Path

from . import native
from .errors import ModelError
from .model_info import read_model_info

llama_cpp = native.llama_cpp


def load_model(path: Path, rpc, gpu_layers: int, *, repack: bool = True):
    """(llama.cpp model, its placement across RPC workers or None); ModelError where it cannot load.
    repack=False keeps the CPU's weights in the file's own layout (plain_layout.py)."""
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = gpu_layers
    mparams.use_extra_bufts = repack
    placement = _place_on_workers(path, rpc, gpu_layers) if rpc else None
    held = placement.apply(mparams) if placement else None  # the devices array must outlive the load
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    del held
    if model:
        return model, placement
    if placement:
        raise ModelError(f"{path}: llama.cpp could not load the model across the RPC workers "
                         f"({placement.describe()})")
    if native.USEARCH_WAS_FIRST:
        raise ModelError(
            f"{path}: llama.cpp could not load the model because usearch was imported before "
            "sense_local (a libstdc++ clash); import sense_local first"
        )
    raise ModelError(f"{path}: llama.cpp could not load this model (unsupported or damaged GGUF)")


def _place_on_workers(path: Path, rpc, gpu_layers: int):
    from .rpc import place_on_workers

    return place_on_workers(rpc, read_model_info(path).n_layer, gpu_layers)
