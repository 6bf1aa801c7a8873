"""The build probe: a real decode through the installed llama-cpp-python, in its own process.

    python scripts/llama_probe.py MODEL.gguf [--gpu-layers N]

Loads the model, decodes a 24-token batch (the matrix kernels a prefill and a draft verification
use) and 8 greedy one-token steps (the vector kernels plain decoding uses). Exit 0 and one line on
success; a build that uses an instruction this CPU cannot run dies here with SIGILL instead of in
the user's first chat. Stdlib and llama_cpp only: it runs before sense-local is installed.
"""
from __future__ import annotations

import argparse
import ctypes
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--gpu-layers", type=int, default=0)
    args = parser.parse_args(argv)

    import llama_cpp

    @llama_cpp.llama_log_callback
    def quiet(level, text, user_data):  # llama.cpp logs every tensor; the probe's answer is one line
        pass

    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = args.gpu_layers
    model = llama_cpp.llama_model_load_from_file(args.model.encode(), mparams)
    if not model:
        print(f"probe: could not load {args.model}", file=sys.stderr)
        return 3
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_threads, cparams.n_threads_batch = 256, 64, 2, 2
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    text = b"The quick brown fox jumps over the lazy dog. Count: one, two, three, four, five,"
    buf = (llama_cpp.llama_token * 64)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, 64, True, False)
    prompt = list(buf[: min(n, 24)])
    batch = llama_cpp.llama_batch_init(64, 0, 1)
    out = []

    def decode(tokens: list[int], start: int) -> int:
        batch.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, start + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(tokens) - 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("probe: llama_decode failed")
        logits = llama_cpp.llama_get_logits_ith(ctx, -1)
        return max(range(n_vocab), key=lambda t: logits[t])

    tok = decode(prompt, 0)
    for step in range(8):
        out.append(tok)
        tok = decode([tok], len(prompt) + step)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    print(f"probe: ok, decoded {len(prompt)}+{len(out)} tokens; {llama_cpp.llama_print_system_info().decode()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
