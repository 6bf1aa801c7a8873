"""`sense-local history`: the reply histories kept under the data folder (reply_history.py), shown
or cleared, without loading a model."""
from __future__ import annotations

import json

from .datastore.manifest import MANIFEST, Manifest, StoreError
from .datastore.store_reader import folder_bytes
from .reply_history import clear_histories, histories_root


def cmd_history(args) -> int:
    root = histories_root()
    if args.clear:
        freed = clear_histories(root)
        print(json.dumps({"cleared": str(root), "freed_bytes": freed}) if args.json
              else f"cleared the reply histories in {root} ({freed / 2**20:.1f} MiB)")
        return 0
    rows = []
    for manifest_file in sorted(root.rglob(MANIFEST)) if root.exists() else []:
        directory = manifest_file.parent
        try:
            m = Manifest.load(directory)
        except StoreError as exc:
            rows.append({"path": str(directory), "error": str(exc)})
            continue
        rows.append({"path": str(directory), "model": m.model_name, "owner": directory.name,
                     "replies": len(m.documents), "tokens": sum(d.n_tokens for d in m.documents.values()),
                     "disk_bytes": folder_bytes(directory)})
    if args.json:
        print(json.dumps({"root": str(root), "histories": rows}, indent=1))
    elif not rows:
        print(f"no reply histories (they are kept in {root}; --no-history keeps none)")
    else:
        for r in rows:
            if "error" in r:
                print(f"{r['path']}: {r['error']}")
            else:
                print(f"{r['model']} ({r['owner']}): {r['replies']} replies, {r['tokens']} tokens, "
                      f"{r['disk_bytes'] / 2**20:.1f} MiB  {r['path']}")
    return 0
