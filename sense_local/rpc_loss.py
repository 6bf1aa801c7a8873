"""A worker lost under a loaded model: one clear line, never ggml's abort (issue 33).

llama.cpp's RPC client has no error path: a worker that stops answering (killed, its machine gone)
makes it call GGML_ABORT, from its dispatcher thread, with a decode of ours waiting on that thread
forever. ggml lets a program see the message first (`ggml_set_abort_callback`), after which abort()
follows unless the callback never returns. So, once a process uses workers (`arm`), the callback:

- passes every other abort through as before (the message on stderr, then abort());
- names the lost worker: the message names it on a failed connect or handshake; a connection that
  died mid-command is not named, so each worker in use is asked for a TCP connection (the dead one
  refuses it, or does not answer within a second);
- with no listener (the CLI, the chat app): ends the process with one line (`native.exit_with_line`);
- with listeners (`sense-local serve`): tells them, then keeps llama.cpp's thread parked for good,
  so abort() never runs. The decode waiting on it never returns: the model is gone for this process
  (its layers on the lost worker, and the other workers' connections held by the stuck decode), and
  `Engine.close` leaves it alone (`lost()`); the server answers 503 naming the worker from then on.

A worker that vanishes without closing its connection (a cable pulled, a machine powered off) is
noticed only when TCP gives up on it: minutes, not seconds.
"""
from __future__ import annotations

import ctypes
import re
import socket
import sys
import threading
import time
from collections.abc import Callable

from . import native

LOST_MARKERS = ("Remote RPC server crashed", "Failed to connect to ", "RPC handshake failed for ")
PROBE_TIMEOUT_S = 1.0

_CALLBACK_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_callback = None  # the installed callback, kept alive for the life of the process
_endpoints: list = []  # workers in use (rpc.Endpoint), in the order they were armed
_listeners: list[Callable[[str], None]] = []
_lost: str | None = None
_kept: list = []  # engines on the lost workers: freeing them would wait on the stuck connection
_park = threading.Event()  # never set: the lost worker's thread waits on it for good


def arm(endpoint) -> None:
    """From now on a lost worker is handled here; `endpoint` is one the process uses."""
    global _callback
    if endpoint not in _endpoints:
        _endpoints.append(endpoint)
    if _callback is None:
        from .native import shared_library

        lib = shared_library("ggml-base")
        lib.ggml_set_abort_callback.restype = ctypes.c_void_p
        lib.ggml_set_abort_callback.argtypes = [_CALLBACK_TYPE]
        _callback = _CALLBACK_TYPE(_on_abort)
        lib.ggml_set_abort_callback(_callback)


def on_loss(listener: Callable[[str], None]) -> None:
    """Call `listener(message)` when a worker is lost, instead of ending the process."""
    _listeners.append(listener)


def lost() -> str | None:
    """What was lost (one line naming the worker), or None while every worker answers."""
    return _lost


def keep(thing) -> None:
    """Hold `thing` (an engine on the lost workers) for the life of the process, never freed."""
    _kept.append(thing)


def _on_abort(raw: bytes) -> None:  # pragma: no cover - called by ggml, from any thread
    global _lost
    text = (raw or b"").decode("utf-8", errors="replace").strip()
    if not any(marker in text for marker in LOST_MARKERS):
        sys.stderr.write(text + "\n")  # ggml's own abort, as without the callback
        sys.stderr.flush()
        return
    if _lost is not None:  # a second thread failing over the same loss: park it too
        _park.wait()
    _lost = describe_loss(text)
    if not _listeners:
        native.exit_with_line(f"sense-local: error: {_lost}; start it again and rerun", 2)
    for listener in _listeners:
        try:
            listener(_lost)
        except Exception as exc:  # a listener's bug must not let abort() through
            sys.stderr.write(f"sense-local: internal error while reporting a lost RPC worker: {exc!r}\n")
    _park.wait()


def describe_loss(message: str) -> str:
    """One line naming the lost worker(s), from ggml's abort message and, if it names none, asking each."""
    named = re.search(r"(?:Failed to connect to|RPC handshake failed for) (\S+)", message)
    gone = [named.group(1)] if named else _not_answering()
    if len(gone) == 1:
        who = f"RPC worker {gone[0]}"
    elif gone:
        who = "RPC workers " + ", ".join(gone)
    else:  # every worker still takes connections: one broke its connection or its reply
        who = "an RPC worker (one of " + ", ".join(str(e) for e in _endpoints) + ")"
    return f"{who} stopped answering; the model's layers there are gone"


def _not_answering(tries: int = 5, pause_s: float = 0.2) -> list[str]:
    """The workers that refuse a connection, asked again for up to a second while every one takes
    it: a killed worker's listening socket can outlive, for a moment, the connection whose break
    ended the decode (a fresh clone's test saw every worker answer once)."""
    for attempt in range(tries):
        gone = [str(e) for e in _endpoints if not _answers(e)]
        if gone or attempt == tries - 1:
            return gone
        time.sleep(pause_s)
    return []


def _answers(endpoint) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
