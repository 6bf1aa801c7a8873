"""The bench's run order: repetitions interleaved, every second one reversed (ABBA), so a steady drift
of the machine's speed favours neither our methods nor the peers. Our methods decode for real on the
135M; the peer is a recorder standing in for llama-server (tests/test_llama_server_peer.py runs that)."""
from __future__ import annotations

import statistics

from sense_local.bench import runner
from sense_local.bench.peers import PeerResult
from sense_local.bench.summary import rep_spread
from sense_local.bench.tasks import Task


class _RecordingPeer:
    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def run(self, prompt, max_tokens):
        self.log.append(self.name)
        return PeerResult([1, 2, 3], "", 0.01, forwards=3)


def test_every_second_repetition_runs_in_reverse_order(engine, monkeypatch):
    log: list[str] = []
    decode = runner.run_method

    gaps: list[tuple[str, bool]] = []  # (method, whether its run recorded top-2 gaps), in run order

    def logged(engine, prompt, m, *args, record_gaps=False):
        log.append(m)
        gaps.append((m, record_gaps))
        return decode(engine, prompt, m, *args, record_gaps=record_gaps)

    monkeypatch.setattr(runner, "run_method", logged)
    peers = [_RecordingPeer("llama-server", log), _RecordingPeer("llama-server-ngram-mod", log)]
    task = Task("order", "open", "Name three colours.")
    rows = runner.run_task(engine, task, ["ar", "pld"], peers, 4, {p.name: 4 for p in peers}, max_tokens=6)
    forward = ["ar", "pld", "llama-server", "llama-server-ngram-mod"]
    assert log == forward + forward[::-1] + forward + forward[::-1]
    assert {r.method for r in rows} == set(forward)
    # only ar's first rep, the reference the others are compared with, pays for recording gaps
    assert [g for g in gaps if g[1]] == [("ar", True)] and gaps[0] == ("ar", True)
    ar = next(r for r in rows if r.method == "ar")
    assert ar.tokens > 0 and ar.tok_per_s > 0  # the reversed repetitions still give every method its speed
    for row in rows:  # every rep's speed is kept beside the median the row reports
        assert len(row.tok_per_s_reps) == 4 and all(s > 0 for s in row.tok_per_s_reps)
        assert abs(statistics.median(row.tok_per_s_reps) - row.tok_per_s) < 0.02
    spread = rep_spread(rows)
    assert set(spread) == set(forward)
    assert spread["llama-server"] == 0.0  # the recorder takes the same time every rep
    one_rep = runner.run_task(engine, task, ["ar"], [], 1, {}, max_tokens=6)
    assert rep_spread(one_rep) == {}  # one rep: nothing to compare
