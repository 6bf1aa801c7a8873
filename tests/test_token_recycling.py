"""Token Recycling: the target's own top candidates kept per token and per pair of tokens, drafted
again as trees (drafters/recycle.py), alone and grafted around SENSE's drafts; the loop hands each
decoded row's candidates over only where such drafts can pay."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from sense_local.bench.runner import NEAR_TIE, first_divergence
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.cost import FLAT, CostCurve
from sense_local.speculative.drafters.recycle import SOURCE, RecycleDrafter, RecycleTable, base_feedback, recycled_tree
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.top_tokens import top_tokens
from sense_local.speculative.types import Draft, Feedback, RowCandidates


@pytest.mark.parametrize("vocab", [151936, 49152, 1001, 37])
def test_top_tokens_are_each_row_s_likeliest_in_order(vocab):
    rng = np.random.default_rng(vocab)
    logits = (rng.standard_normal((6, vocab)) * 3).astype(np.float32)
    logits[2, vocab - 1] = 50.0  # the likeliest in the tail that no group divides
    logits[3, :8] += 30.0  # the likeliest crowded into neighbouring ids
    want = np.argsort(-logits, axis=1, kind="stable")[:, :8]
    assert top_tokens(logits, 8).tolist() == want.tolist()


def rows(tokens, previous, top, logits):
    return RowCandidates(np.asarray(tokens, np.int32), np.asarray(previous, np.int32),
                         np.asarray(top, np.int32), np.asarray(logits, np.float32))


def test_the_table_keeps_pair_and_token_entries_and_scores_the_one_a_draft_would_use():
    table = RecycleTable(100, k=4)
    table.add(rows([5], [4], [[9, 8, 7, 6]], [[5.0, 1.0, 0.0, -1.0]]))  # margin 4: bucket 3, grade 3 * 4
    assert table.entry(4, 5) == ([9, 8, 7, 6], 1, 12)  # the pair's own entry
    assert table.entry(3, 5) == ([9, 8, 7, 6], 0, 12)  # another pair: the token's
    assert table.entry(-1, 6) == ([-1, -1, -1, -1], 0, 0)  # never read
    before = table.rank_probs()
    # 5 read after 4 again, where the target chose 8: the pair entry had it at rank 1
    table.add(rows([5], [4], [[8, 9, 1, 2]], [[0.5, 0.4, 0.0, -1.0]]))
    assert table.seen[1, 12] == 1 and table.hits[1, 12].tolist() == [0, 1, 0, 0]
    assert table.seen[0].sum() == 0
    # 5 read after 2 (no such pair): the token's entry, now [8, 9, 1, 2], had the choice 2 at rank 3
    table.add(rows([5], [2], [[2, 3, 4, 1]], [[3.0, 0.0, 0.0, 0.0]]))
    assert table.seen[0, 0] == 1 and table.hits[0, 0].tolist() == [0, 0, 0, 1]  # margin 0.1, new: grade 0
    probs = table.rank_probs()
    assert probs[1, 12, 1] > before[1, 12, 1] and probs[1, 12, 0] < before[1, 12, 0]
    assert np.all(np.diff(probs, axis=2) <= 0)  # a later rank is never likelier
    # the same first candidate written again and again: the entry is confirmed, up to 3 times
    grades = []
    for _ in range(5):
        table.add(rows([7], [6], [[1, 2, 3, 4]], [[9.0, 0.0, 0.0, 0.0]]))  # margin 9: bucket 4
        grades.append(table.entry(6, 7)[2])
    assert grades == [16, 17, 18, 19, 19]
    assert table.rank_probs()[1, 19, 0] > table.rank_probs()[1, 16, 0]  # confirmed entries are believed more


def sure_table() -> RecycleTable:
    """1 -> 2 -> 3 -> 4 with sure entries (margin 10), 1 -> 7 second; every row seen four times."""
    table = RecycleTable(50, k=4)
    for _ in range(4):
        table.add(rows([1, 2, 3, 4], [0, 1, 2, 3], [[2, 7, 8, 9], [3, 10, 11, 12], [4, 13, 14, 15], [5, 16, 17, 18]],
                       [[20.0, 10.0, 0.0, 0.0]] * 4))
    return table


def test_a_recycled_tree_is_grown_most_probable_first_through_the_table():
    tokens, parents, probs = (lambda d: (d.tokens.tolist(), d.parents.tolist(), d.path_probs))(
        recycled_tree(sure_table(), 1, 12, previous=0, max_branches=3))
    assert tokens[:3] == [2, 3, 4] and parents[:3] == [-1, 0, 1]  # the first candidates' chain
    assert parents[tokens.index(5)] == 2 and parents[tokens.index(7)] == -1  # on, and the second beside it
    assert all(p < i for i, p in enumerate(parents))
    assert np.all(np.diff(probs) <= 1e-7)
    has_child = np.zeros(len(tokens), bool)
    has_child[[p for p in parents if p >= 0]] = True
    assert (~has_child).sum() <= 3
    assert recycled_tree(RecycleTable(50, k=4), 1, 12) is None  # an empty table drafts nothing


def test_a_graft_keeps_the_base_draft_and_recycles_beside_and_after_it():
    base = Draft(np.array([2, 3], np.int32), "pld", 0.9)  # agrees with the table's chain
    draft = recycled_tree(sure_table(), 1, 20, base=base, previous=0)
    assert draft.tokens[:2].tolist() == [2, 3] and draft.path_probs[:2] == pytest.approx([0.9, 0.81])
    assert draft.source == "pld" and draft.sources[:2] == ("pld", "pld")
    after = draft.tokens.tolist().index(4)  # the token after the base's end comes from the table
    assert draft.parents[after] == 1 and draft.sources[after] == SOURCE
    assert draft.path_probs[after] < 0.81
    alternative = draft.tokens.tolist().index(7)  # the table's second candidate beside the base's first
    assert draft.parents[alternative] == -1 and draft.path_probs[alternative] < 0.1
    # how the base fared: its nodes start every path
    whole = Feedback(draft, 3, 3, path=np.array([0, 1, after]))
    assert (lambda f: (f.draft is base, f.accepted, f.drafted))(base_feedback(whole)) == (True, 2, 2)
    beside = Feedback(draft, 1, 1, path=np.array([alternative]))
    assert (lambda f: (f.accepted, f.drafted))(base_feedback(beside)) == (0, 1)
    alone = recycled_tree(sure_table(), 1, 6, previous=0)
    assert base_feedback(Feedback(alone, 2, 2, path=np.array([0, 1]))) is None
    # a base the loop did not verify (the table's node went first, alone) is scored on its first token
    wrong = Draft(np.array([7], np.int32), "context", 0.2)  # the table's first candidate, 2, is likelier
    tree = recycled_tree(sure_table(), 1, 6, base=wrong, previous=0)
    assert tree.sources[0] == SOURCE and tree.tokens[0] == 2
    scored = base_feedback(Feedback(tree.first(1), 1, first_token=2))
    assert scored.draft.tokens.tolist() == [7] and (scored.accepted, scored.drafted) == (0, 1)
    # a table with nothing to add gives the base back as it was (a chain stays a chain)
    assert recycled_tree(RecycleTable(50, k=4), 1, 6, base=base) is base or \
        recycled_tree(RecycleTable(50, k=4), 1, 6, base=base).parents is None


def test_rows_reading_one_token_in_one_decode_count_as_separate_decodes():
    together, apart = RecycleTable(20, k=4), RecycleTable(20, k=4)
    row = ([5], [4], [[1, 2, 3, 4]], [[9.0, 0.0, 0.0, 0.0]])
    together.add(rows(row[0] * 3, row[1] * 3, row[2] * 3, row[3] * 3))
    for _ in range(3):
        apart.add(rows(*row))
    assert together.entry(4, 5) == apart.entry(4, 5) == ([1, 2, 3, 4], 1, 4 * 4 + 2)
    assert together.seen.tolist() == apart.seen.tolist() and together.seen.sum() == pytest.approx(2, abs=0.01)


def test_a_tree_loses_what_hangs_below_an_end_of_generation_node_and_cuts_keep_sources():
    eos = 0
    tree = Draft(np.array([3, eos, 4, 5, 6], np.int32), "pld", 0.9, None, np.array([-1, -1, 1, 0, 3], np.int32),
                 np.array([0.9, 0.5, 0.4, 0.3, 0.2]), ("pld", SOURCE, SOURCE, "pld", SOURCE))
    cut = tree.to_end(lambda t: t == eos)
    assert cut.tokens.tolist() == [3, eos, 5, 6] and cut.parents.tolist() == [-1, -1, 0, 2]
    assert cut.sources == ("pld", SOURCE, "pld", SOURCE) and cut.path_probs.tolist() == pytest.approx([0.9, 0.5, 0.3, 0.2])
    assert tree.first(2).sources == ("pld", SOURCE) and tree.main_path().sources == ("pld", "pld", SOURCE)
    chain = Draft(np.array([3, eos, 4], np.int32), "pld", 0.9)
    assert chain.to_end(lambda t: t == eos).tokens.tolist() == [3, eos]


class Recorder(RecycleDrafter):
    def __init__(self, table):
        super().__init__(table)
        self.seen: list[tuple[int, int, int]] = []  # (token before, token read, the target's next) of every handed row

    def add_candidates(self, candidates):
        super().add_candidates(candidates)
        self.seen += zip(candidates.previous.tolist(), candidates.tokens.tolist(), candidates.top[:, 0].tolist())


def test_the_loop_hands_every_row_s_candidates_and_recycled_trees_are_accepted(engine):
    prompt = chat(engine, "Count from 1 to 40, separated by commas.")
    ar = make_decoder(engine, GenerationOptions(method="ar", max_tokens=90), record_gaps=True)
    want = [e.token for e in ar.generate(prompt, 90) if e.token >= 0]
    drafter = Recorder(RecycleTable(engine.n_vocab))
    dec = SpecDecoder(engine, method="recycle", drafter=drafter, cost=FLAT)
    events = [e for e in dec.generate(prompt, 90) if e.token >= 0]
    out = [e.token for e in events]
    at = first_divergence(out, want)
    if at is not None:
        assert ar.stats.top2_gaps[at] < NEAR_TIE
    # every emitted token was the first candidate of the row that read the two tokens before it
    seen = set(drafter.seen)
    text = prompt + out
    assert all((text[i - 2], text[i - 1], text[i]) in seen for i in range(len(prompt), len(text)))
    # trees fill the decode: the rows of rejected nodes were handed too (the alternatives they tried)
    committed = list(engine.tokens)  # the prompt and every token the decodes kept (past a stop too)
    kept = set(zip(committed[:-1], committed[1:]))
    assert not all((before, token) in kept for before, token, _ in drafter.seen)
    recycled = sum(e.source == SOURCE for e in events)
    assert recycled >= 20 and dec.stats.tau > 1.5  # ", " and the digits come round again


def test_where_the_loop_cuts_drafts_only_the_rows_that_read_a_kept_token_are_handed(engine):
    # short decodes nearly free (trees of a few nodes verified, some of them rejected), 16 rows not
    cpu = CostCurve((1, 2, 4, 8, 16, 32, 64), (1.0, 1.02, 1.05, 1.1, 2.5, 5.0, 9.0))
    drafter = Recorder(RecycleTable(engine.n_vocab))
    dec = SpecDecoder(engine, method="recycle", drafter=drafter, cost=cpu)
    list(dec.generate(chat(engine, "List the days of the week, one per line, then list them again in reverse."), 90))
    committed = list(engine.tokens)
    kept = set(zip(committed[:-1], committed[1:]))
    assert dec.stats.drafted > dec.stats.accepted > 0  # drafts were verified, and some of them rejected
    assert len(drafter.seen) > dec.stats.forwards and all((p, t) in kept for p, t, _ in drafter.seen)


def test_no_rows_are_handed_where_a_recycled_draft_cannot_pay(engine):
    steep = CostCurve((1, 2, 64), (1.0, 1.8, 40.0))  # this AMD EPYC's c(2): a token at 0.8 does not pay
    drafter = Recorder(RecycleTable(engine.n_vocab))
    dec = SpecDecoder(engine, method="recycle", drafter=drafter, cost=steep)
    list(dec.generate(chat(engine, "Count from 1 to 20, separated by commas."), 30))
    assert drafter.seen == [] and dec.stats.drafted == 0


def test_sense_grafts_recycled_candidates_under_free_verification(engine):
    prompt = chat(engine, "List the days of the week, one per line, then list them again in reverse.")
    ar = make_decoder(engine, GenerationOptions(method="ar", max_tokens=80), record_gaps=True)
    want = [e.token for e in ar.generate(prompt, 80) if e.token >= 0]
    dec = make_decoder(engine, GenerationOptions(method="sense", max_tokens=80, free_verification=True))
    events = [e for e in dec.generate(prompt, 80) if e.token >= 0]
    at = first_divergence([e.token for e in events], want)
    if at is not None:
        assert ar.stats.top2_gaps[at] < NEAR_TIE
    assert sum(e.source == SOURCE for e in events) >= 5
    assert dec.stats.drafted_by_source.get(SOURCE, 0) > 0


def test_trees_are_grown_small_only_after_the_loop_cut_one():
    table = sure_table()
    drafter = RecycleDrafter(table)
    drafter.begin([0, 1])
    drafter.add_candidates(rows([1], [0], [[2, 7, 8, 9]], [[20.0, 10.0, 0.0, 0.0]]))
    whole = drafter.propose(63)
    assert len(whole.tokens) > 8
    drafter.update(Feedback(whole, 0))  # verified whole: the next is grown as large
    assert len(drafter.propose(63).tokens) == len(whole.tokens)
    drafter.update(Feedback(whole.first(2), 0))  # the loop verified 2 of it: grow 8 next
    assert len(drafter.propose(63).tokens) == 8


def test_one_runtime_carries_the_recycle_table_from_task_to_task(engine):
    from sense_local.bench import runner
    from sense_local.bench.tasks import Task

    runtimes: dict = {}
    first = Task("one", "open", "Count from 1 to 30, separated by commas.")
    runner.run_task(engine, first, ["ar", "recycle"], [], 1, {}, max_tokens=60, free_verification=True, runtimes=runtimes)
    table = runtimes[("recycle", 0)].recycle_table()
    learned = table.seen.sum()
    assert learned > 20 and ("ar", 0) in runtimes  # every method has its runtime; the table learned the count
    second = Task("two", "open", "Count from 31 to 50, separated by commas.")
    rows = runner.run_task(engine, second, ["ar", "recycle"], [], 1, {}, max_tokens=60, free_verification=True,
                           runtimes=runtimes)
    assert runtimes[("recycle", 0)].recycle_table() is table and table.seen.sum() > learned
    assert next(r for r in rows if r.method == "recycle").tau > 1.5  # the second count drafts from the first's rows


def test_each_rep_of_one_runtime_has_runtimes_of_its_own(engine):
    """Two reps through one runtime each: each rep's table sees the task once (a shared one would
    draft the second rep from the first's rows of the same reply)."""
    from sense_local.bench import runner
    from sense_local.bench.tasks import Task

    runtimes: dict = {}
    task = Task("one", "open", "Count from 1 to 30, separated by commas.")
    rows = runner.run_task(engine, task, ["ar", "recycle"], [], 2, {}, max_tokens=60, free_verification=True,
                           runtimes=runtimes)
    first, second = runtimes[("recycle", 0)].recycle_table(), runtimes[("recycle", 1)].recycle_table()
    assert first is not second and first.seen.sum() > 20
    assert abs(first.seen.sum() - second.seen.sum()) < 0.2 * first.seen.sum()  # alike: each read one reply
    recycle = next(r for r in rows if r.method == "recycle")
    assert len(recycle.tau_reps) == 2 and max(recycle.tau_reps) < 1.5 * min(recycle.tau_reps)


def test_pooled_peers_run_a_task_once_through_one_runtime():
    from sense_local.bench.runner import peer_repetitions

    apart, pooled = peer_repetitions(2, False), peer_repetitions(2, True)
    assert apart["llama-server-ngram-mod"] == 2 and pooled["llama-server-ngram-mod"] == 1
    assert pooled["llama-server-ngram-cache"] == 1
    assert pooled["llama-server"] == 2 and pooled["llama-server-ngram-simple"] == 2
