"""`sense-local info` and `sense-local models`: what a GGUF is, and which models are at hand."""
from __future__ import annotations

import json

from .errors import SenseError


def cmd_info(args) -> int:
    from .model_info import read_model_info
    from .native import backends, system_info
    from .registry import resolve_model

    info = read_model_info(resolve_model(args.model_pos or args.model))
    system = system_info()
    if args.json:
        print(json.dumps({**info.to_dict(), "backends": backends(system), "llama_cpp_system_info": system}, indent=2))
        return 0
    rows = info.to_dict()
    template = rows.pop("chat_template")
    for key, value in rows.items():
        print(f"{key:>12}: {value}")
    print(f"{'template':>12}: {'yes (' + str(len(template)) + ' chars)' if template else 'none (ChatML fallback)'}")
    print(f"{'backend':>12}: {', '.join(backends(system))}")
    print(f"{'llama.cpp':>12}: {system}")
    return 0


def cmd_models(args) -> int:
    """Registry models (present or not) and the GGUF files other local tools keep."""
    rows = _registry_rows() + _found_rows()
    for row in rows:
        _add_header_facts(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<44} {'source':<9} {'arch':<8} {'quant':<8} {'size':>9}  status")
    for row in rows:
        size = f"{row['bytes'] / 2**30:.2f} GiB" if row["bytes"] else "?"
        print(f"{row['name']:<44} {row['source']:<9} {row['architecture'] or '-':<8} "
              f"{row['quantization'] or '-':<8} {size:>9}  {_status(row)}")
    return 0


def _registry_rows() -> list[dict]:
    from .registry import load_registry

    registry = load_registry()
    rows = []
    for entry in registry.entries.values():
        roles = [role for role, name in registry.roles.items() if name == entry.name]
        rows.append({"name": entry.name, "source": "registry", "present": entry.present, "path": str(entry.path),
                     "bytes": entry.path.stat().st_size if entry.present else entry.size, "license": entry.license,
                     "roles": roles, "why": entry.why})
    return rows


def _found_rows() -> list[dict]:
    from .model_discovery import discover

    return [{"name": found.name, "source": found.tool, "present": True, "path": str(found.path),
             "bytes": found.path.stat().st_size, "license": "", "roles": [], "why": ""} for found in discover()]


def _add_header_facts(row: dict) -> None:
    """The row's architecture and quantization from its GGUF header (None when absent; unreadable: error)."""
    from .model_info import read_model_info

    row["architecture"] = row["quantization"] = None
    if row["present"]:
        try:
            info = read_model_info(row["path"])
            row["architecture"], row["quantization"] = info.architecture, info.quantization
        except SenseError as exc:
            row["error"] = str(exc)


def _status(row: dict) -> str:
    status = "ready" if row["present"] else "not fetched (models/fetch.py " + row["name"] + ")"
    if row.get("error"):
        status = "unreadable: " + row["error"]
    if row["roles"]:
        status += " [" + ", ".join(row["roles"]) + "]"
    return status
