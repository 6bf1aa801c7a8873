"""Faults a local server meets in a day, on the real `sense-local serve` and the 135M: a body sent a
byte a second, a client that opens a stream and never reads it, 200 idle connections, kill -9 in the
middle of a streamed reply and a restart, and a disk that fills while documents are indexed.
Ordering and outcomes are asserted (which request ended how, in which order), never a timing bar."""
from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from conftest import ROOT, pydoc_topics_store, run_cli
from served import ServeProcess
from test_fault_injection import write_docs

PLAIN = {"grounded": False, "method": "ar"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServeProcess(tmp_path_factory.mktemp("faults") / "serve.log", ctx=4096)
    yield s
    s.stop()


def client_of(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=300)


def ask(server: ServeProcess, text: str = "Say yes.", tokens: int = 4) -> str:
    reply = client_of(server).chat.completions.create(model="test", messages=[{"role": "user", "content": text}],
                                                      max_tokens=tokens, temperature=0, extra_body=PLAIN)
    return reply.choices[0].message.content


def raw_request(port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of a plain HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b""
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), rest


def test_a_body_sent_a_byte_a_second_holds_nobody_up(server):
    """Others are answered while a body trickles in (its last byte is held back until they are); then
    the trickled request is answered too."""
    body = json.dumps({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, **PLAIN}).encode()
    order: list[str] = []
    others_done = threading.Event()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=300)
    request = raw_request(server.port, "/v1/completions", body)

    def trickle() -> None:
        sock.sendall(request[: -len(body)])
        sent = 0
        while not others_done.is_set() and sent < len(body) - 1:  # a byte a second
            sock.sendall(body[sent : sent + 1])
            sent += 1
            order.append("byte")
            time.sleep(1)
        others_done.wait(600)
        sock.sendall(body[sent:])
        order.append("rest of the body")

    sender = threading.Thread(target=trickle)
    sender.start()
    while not order:
        time.sleep(0.05)
    for i in range(3):  # others come and go while the body trickles in
        assert ask(server, f"Say {['yes', 'no', 'maybe'][i]}.")
        order.append(f"answered {i}")
    others_done.set()
    sender.join()
    status, answer = read_response(sock)
    sock.close()
    assert [o for o in order if o != "byte"] == ["answered 0", "answered 1", "answered 2", "rest of the body"]
    assert order[0] == "byte" and status == 200 and "Paris" in json.loads(answer)["choices"][0]["text"]


COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,"


def test_a_client_that_never_reads_its_stream_does_not_hold_the_model(server):
    """Its socket's buffers fill, its events wait untaken, and the turn is cancelled (jobs.py): the
    request queued behind it is answered, the stuck turn ends cancelled, not completed."""
    before = server.health()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small-buffered client: the test's wait is shorter
    stuck.connect(("127.0.0.1", server.port))
    body = json.dumps({"prompt": "hello world " * 30, "max_tokens": 3900, "temperature": 0, "stream": True,
                       "grounded": False, "method": "ar"}).encode()  # it repeats itself: it never ends early
    # (`ar`: prompt lookup drafts the repetition whole, and its 3,900 tokens would be written before
    # the stall's 2 s were up; the turn would complete, its events queued, the model free all the same)
    stuck.sendall(raw_request(server.port, "/v1/completions", body))  # and never reads a byte
    deadline = time.time() + 60
    while not server.health()["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert server.health()["running"]
    assert ask(server, "Say hello.", tokens=4)  # queued behind the stuck stream, answered
    after = server.health()
    stuck.close()
    assert after["stalled"] == before["stalled"] + 1, after  # the stuck turn was cut...
    assert after["cancelled"] == before["cancelled"] + 1  # ...as a cancel,
    assert after["completed"] == before["completed"] + 1  # and only the other request completed


def test_a_slow_reader_is_not_taken_for_a_stuck_one(server):
    """A stream read a chunk at a time, with pauses, gets its whole reply."""
    before = server.health()
    stream = client_of(server).completions.create(model="test", prompt=COUNTING, max_tokens=120, temperature=0,
                                                  stream=True, extra_body=PLAIN)
    pieces = []
    for i, chunk in enumerate(stream):
        pieces.append(chunk.choices[0].text if chunk.choices else "")
        if i in (5, 40):
            time.sleep(3)  # longer than the stall rule's STALL_S, with few events waiting
    whole = client_of(server).completions.create(model="test", prompt=COUNTING, max_tokens=120, temperature=0,
                                                 extra_body=PLAIN)
    assert "".join(pieces) == whole.choices[0].text
    assert server.health()["stalled"] == before["stalled"]


def test_two_hundred_idle_connections_leave_the_server_serving(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(200)]
    for i, sock in enumerate(idle[:100]):  # half of them stop in the middle of their headers
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" if i % 2 else b"GET /v1/mo")
    try:
        assert ask(server, "Name a colour.")
        text = "".join(c.choices[0].delta.content or "" for c in client_of(server).chat.completions.create(
            model="test", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=6, stream=True,
            extra_body=PLAIN) if c.choices)
        assert text
        assert server.health()["status"] == "ok"
    finally:
        for sock in idle:
            sock.close()
    assert ask(server, "Name an animal.")


def test_kill_9_mid_stream_then_a_restart_serves_and_the_store_verifies(engine, tmp_path_factory):
    store = pydoc_topics_store(engine, tmp_path_factory, "kill9", ["with", "while", "lambda"])
    s = ServeProcess(tmp_path_factory.mktemp("kill9") / "serve.log", "--store", str(store))
    try:
        question = [{"role": "user", "content": "What does the with statement do?"}]
        stream = client_of(s).chat.completions.create(model="test", messages=question, max_tokens=400, stream=True)
        got = [c for _, c in zip(range(4), stream)]
        assert got[0].model_extra["sources"]  # grounded: the store is open in the server
        s.kill9()
        with pytest.raises(Exception):  # the connection died with the server (the HTTP library's own error)
            for _ in stream:
                pass
        s.start()  # the same port, at once
        reply = client_of(s).chat.completions.create(model="test", messages=question, max_tokens=8)
        assert reply.choices[0].message.content and reply.model_extra["sources"]
    finally:
        s.stop()
    verified = run_cli("index", "--verify", "--store", str(store))
    assert verified.returncode == 0 and ": ok" in verified.stdout, verified.stderr


# ------------------------------------------------------------------------------------- disk full
def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def index_cli(docs: Path, store: Path, *, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "sense_local.cli", "index", str(docs), "--store", str(store),
                           "--commit-every", "0"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=os.environ.copy(), preexec_fn=limit if file_limit else None)


def check_full_disk_run(proc: subprocess.CompletedProcess, store: Path, before: dict) -> dict:
    """One error line; the store verifies and holds at least what it held before; nothing uncommitted left."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no room to write" in errors[0] and "as of its last commit" in errors[0], proc.stderr
    verified = run_cli("index", "--verify", "--store", str(store), "--json")
    assert verified.returncode == 0, verified.stderr
    after = json.loads(verified.stdout)
    assert after["documents"] >= before["documents"] and after["vectors"] >= before["vectors"]
    manifest = json.loads((store / "manifest.json").read_text())
    names = sorted(p.name for p in store.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert [n for n in names if n.startswith("index-")] == [f"index-{manifest['generation']}.usearch"], names
    assert (store / "tokens.i32").stat().st_size == 4 * manifest["n_tokens"]
    return after


BIG = ["try", "import", "function", "assignment"]


@pytest.mark.parametrize("how", ["tmpfs", "file-size limit"])
def test_a_full_disk_while_indexing_is_one_line_and_keeps_the_last_commit(tmp_path, how):
    """The store is made with two documents, then more are indexed onto a disk with too little room (a
    small tmpfs, or RLIMIT_FSIZE in the indexer): one error line, the store as of its last commit
    (it verifies), no uncommitted bytes; with room again the same command finishes the job."""
    first = write_docs(tmp_path / "docs", names=["if", "while"], chars=1500)
    root = tmp_path / "small"
    if how == "tmpfs" and not mount_tmpfs(root, "1m"):
        pytest.skip("mounting a tmpfs needs root (the file-size limit case covers the rest)")
    try:
        store = root / "store"
        made = index_cli(first, store)
        assert made.returncode == 0, made.stderr
        before = json.loads(run_cli("index", "--verify", "--store", str(store), "--json").stdout)
        write_docs(first, names=BIG, chars=50_000)  # ~8,500 tokens: megabytes of keys
        proc = index_cli(first, store, file_limit=2 * 2**20 if how == "file-size limit" else None)
        check_full_disk_run(proc, store, before)
        if how == "tmpfs":  # room again (a file-size limit was the process's own: the next run has none)
            subprocess.run(["mount", "-o", "remount,size=64m", str(root)], check=True)
        done = index_cli(first, store)
        assert done.returncode == 0, done.stderr
        final = json.loads(run_cli("index", "--verify", "--store", str(store), "--json").stdout)
        assert final["documents"] == 2 + len(BIG) and final["unkeyed"] == 0
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(root)], capture_output=True)
