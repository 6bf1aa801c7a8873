"""`sense-local index`: add documents to a store (or --verify, --repair it), with the model pass's
progress as a bar on a terminal, else as lines (JSON events with --json)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from .cli_config import load_engine
from .errors import SenseError

PASS_LINE_EVERY = 5.0  # seconds between the model pass's progress lines when no bar can be drawn


def cmd_index(args) -> int:
    from .datastore import index_paths
    from .datastore.extract import MAX_FILE_BYTES
    from .datastore.maintenance import repair_store
    from .paths import default_store

    store_dir = args.store or str(default_store())
    if args.verify:
        if args.paths:
            raise SenseError("--verify takes no paths: it checks the store (--store DIR)")
        return _verify(store_dir, args.json)
    if not args.paths and not args.repair:
        raise SenseError("index: give the files or folders to index (or --verify, --repair)")
    engine = load_engine(args)
    shown = IndexOutput(args.json)
    limit = int(args.max_file_mb * 1024 * 1024) if args.max_file_mb else MAX_FILE_BYTES
    if args.repair:
        if args.paths:
            raise SenseError("--repair takes no paths: it rebuilds the store's own documents (--store DIR)")
        report = repair_store(engine, store_dir, progress=shown.progress, wait=args.wait)
    else:
        report = index_paths(engine, store_dir, args.paths, progress=shown.progress,
                             max_file_bytes=limit, dtype=args.dtype, commit_every=args.commit_every, wait=args.wait,
                             on_searchable=shown.searchable, finish_keys=args.finish_keys, on_owed=shown.owed)
    shown.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_report(report)
    return 0


def _verify(store_dir: str, as_json: bool) -> int:
    from .datastore.maintenance import verify_store
    from .key_tap import layer_name

    result = verify_store(Path(store_dir))
    print(json.dumps(result) if as_json else
          f"{store_dir}: ok ({result['documents']} documents, {result['tokens']} tokens, {result['vectors']} vectors "
          f"keyed on {layer_name(result['key_layer'])}"
          + (f", {result['unkeyed']} by words only until the next index run" if result["unkeyed"] else "")
          + "; every file matches the manifest)")
    return 0


def _print_report(report) -> None:
    print(
        f"indexed {len(report.added)} new, {len(report.updated)} changed, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged; {report.tokens} tokens in {report.seconds:.1f} s "
        f"({report.tok_per_s:.0f} tok/s); store: {report.store_vectors} vectors, {report.store_bytes / 1e6:.1f} MB"
    )
    for path, reason in report.skipped.items():
        print(f"  skipped {path}: {reason}")
    if report.owed:
        print(f"  {report.owed} document{'s' * (report.owed > 1)} outside these paths ({report.owed_tokens:,} tokens) "
              "an earlier run left searchable by words only: --finish-keys reads them now; otherwise an index of "
              "their folder or the chat app does")


class IndexOutput:
    """What an index run tells the user on stderr as it goes: the model pass's progress (a bar on a
    terminal, else PassLines), documents searchable by words, and documents an earlier run owes."""

    def __init__(self, json_events: bool):
        self.json_events = json_events
        self.bar = None
        self.lines = PassLines(json_events) if json_events or not sys.stderr.isatty() else None

    def progress(self, done: int, total: int, path: str) -> None:
        if self.lines is not None:  # not a terminal, or --json: a line (an event) every few seconds
            self.lines.update(done, total, path)
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                            desc="indexing", disable=None)
        self.bar.update(done - self.bar.n)
        if path:
            self.bar.set_postfix_str(os.path.basename(path)[-30:], refresh=False)

    def owed(self, documents: int, tokens: int, reading_now: bool) -> None:
        what = f"{documents} document{'s' * (documents > 1)} ({tokens:,} tokens) an earlier run left searchable by words only"
        if self.json_events:
            print(json.dumps({"event": "owed", "documents": documents, "tokens": tokens, "reading_now": reading_now}),
                  file=sys.stderr, flush=True)
        elif reading_now:
            print(f"{what}: the model reads them now", file=sys.stderr, flush=True)

    def searchable(self, n: int) -> None:
        if n and not self.json_events:
            print(f"{n} document{'s' * (n > 1)} searchable by words now (ask finds them); the model reads them next",
                  file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PassLines:
    """The model pass's progress where no bar can be drawn (stderr not a terminal, or --json): a line
    (a JSON event with --json) at the start and every PASS_LINE_EVERY seconds, with an estimate."""

    def __init__(self, json_events: bool):
        self.json_events = json_events
        self.start: tuple[float, int] | None = None  # (time, tokens done) of the first report
        self.shown = -math.inf
        self.shown_done = -1

    def update(self, done: int, total: int, path: str) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)
        elif done == self.shown_done or (now - self.shown < PASS_LINE_EVERY and done < total):
            return
        self.shown, self.shown_done = now, done
        t0, d0 = self.start
        left = (total - done) * (now - t0) / (done - d0) if done > d0 and now > t0 else None
        if self.json_events:
            event = {"event": "progress", "done": done, "total": total, "path": path,
                     "seconds_left": None if left is None else round(left)}
            print(json.dumps(event), file=sys.stderr, flush=True)
            return
        estimate = "" if left is None else f", about {left:.0f} s left"
        print(f"indexing: {done:,} / {total:,} tokens{estimate}", file=sys.stderr, flush=True)
