"""The SQLite program store: a sample's recorded life, durability across connections, commit order."""
import sqlite3

import pytest

from evosearch.store import Outcome, Store, StoreError

PROMPT = dict(system="system text", user="user text", completion="", header="", completion_shared=0, user_shared=0)


def test_round_trip(tmp_path):
    store = Store(tmp_path / "run.db")
    store.set_meta("config", {"seed": 3, "islands": [1, 2]})
    pid = store.ask(5, island=1, parents=[0, 2], sampler="mutate", edit_format="full", epoch=0, seen=3, prompt=PROMPT)
    assert store.get(5)["status"] == "pending" and store.get(5)["parents"] == [0, 2]
    store.answered(5, response="text", model="m", sample_s=0.5, tokens_in=10, tokens_out=5, retries=1, cost=None,
                   code="def f(): pass")
    store.evaluated(5, status="ok", reason=None, score=-12.5, descriptors={"size": 4.0}, metrics={"bins": 12.5},
                    syntactic_hash="abc", functional_hash=None, cache_hit=None, duplicate_of=None, eval_s=0.1)
    store.commit(store.get(5), 7, "new", [{"event": "migrate", "from": 0, "to": 1, "program_id": 5}])
    store.close()

    again = Store(tmp_path / "run.db")  # a new connection sees everything
    row = again.get(5)
    assert (row["status"], row["score"], row["descriptors"], row["metrics"]) == ("ok", -12.5, {"size": 4.0}, {"bins": 12.5})
    assert (row["archive"], row["commit_seq"], row["staleness"], row["retries"]) == ("new", 7, 4, 1)
    assert again.prompt(row["prompt_id"]) == ("system text", "user text") and row["prompt_id"] == pid
    assert again.get_meta("config") == {"seed": 3, "islands": [1, 2]}
    assert again.get_meta("missing", "default") == "default"
    assert again.events() == [{"at_commit": 7, "event": "migrate", "from": 0, "to": 1, "program_id": 5}]
    assert again.next_id() == 6 and again.count("status = 'ok'") == 1
    assert [r["id"] for r in again.programs()] == [5]


def test_failure_reasons_are_kept(tmp_path):
    store = Store(tmp_path / "run.db")
    for i, (status, reason) in enumerate([(Outcome.SYNTAX, "line 2: invalid syntax"), ("timeout", "exceeded 1.0 s")]):
        store.ask(i, island=0, parents=[], sampler="local")
        store.failed(i, status, reason)
    assert [(r["status"], r["reason"]) for r in store.programs()] == [
        ("syntax", "line 2: invalid syntax"), ("timeout", "exceeded 1.0 s")]
    with pytest.raises(ValueError):
        store.failed(0, "exploded", "not an outcome")


def test_commits_replay_in_their_recorded_order_and_the_rest_is_left_for_resume(tmp_path):
    store = Store(tmp_path / "run.db")
    for i in range(5):
        store.ask(i, island=0, parents=[], sampler="s", seen=0)
    for i in (0, 3, 1, 4):
        store.failed(i, Outcome.CRASH, "boom")
    for seq, i in enumerate((0, 3, 1)):
        store.commit(store.get(i), seq, None, [])
    assert [r["id"] for r in store.committed()] == [0, 3, 1]
    done, pending = store.uncommitted()
    assert [r["id"] for r in done] == [4] and pending == [2]
    with pytest.raises(sqlite3.IntegrityError):  # one program per commit number
        store.commit(store.get(4), 1, None, [])
    assert store.get(4)["commit_seq"] is None  # the failed commit left nothing behind


def test_a_store_from_before_commit_numbers_gets_them_from_its_committed_marker(tmp_path):
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "CREATE TABLE programs (id INTEGER PRIMARY KEY, island INTEGER, parents TEXT NOT NULL, "
                     "sampler TEXT, status TEXT NOT NULL, reason TEXT, score REAL, descriptors TEXT, archive TEXT);")
    db.executemany("INSERT INTO programs (id, island, parents, status) VALUES (?, 0, '[]', ?)",
                   [(0, "ok"), (1, "crash"), (2, "ok"), (3, "pending")])
    db.execute("INSERT INTO meta VALUES ('committed', '2')")
    db.commit()
    db.close()
    store = Store(tmp_path / "old.db")
    assert [(r["id"], r["commit_seq"]) for r in store.committed()] == [(0, 0), (1, 1)]
    assert [r["id"] for r in store.uncommitted()[0]] == [2]


def test_a_damaged_file_is_one_line(tmp_path):
    (tmp_path / "evosearch.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="is not a usable evosearch store"):
        Store(tmp_path / "evosearch.db")


def test_the_sampler_tally_counts_new_bests_in_commit_order(tmp_path):
    from evosearch.launch import sampler_tally

    store = Store(tmp_path / "run.db")
    # (id, sampler, score or None for a crash, commit number or None for still in flight)
    for i, sampler, score, seq in [(0, "seed", -10, 0), (1, "a", -9, 2), (2, "b", -8, 1), (3, "a", None, 3),
                                   (4, "tune", -7, 4), (5, "a", -1, None)]:
        store.ask(i, island=0, parents=[], sampler=sampler, seen=0)
        if score is None:
            store.failed(i, Outcome.CRASH, "boom")
        else:
            store.evaluated(i, status="ok", reason=None, score=score, descriptors={}, metrics={}, syntactic_hash=str(i),
                            functional_hash=None, cache_hit=None, duplicate_of=None, eval_s=0.1)
        if seq is not None:
            store.commit(store.get(i), seq, None, [])
    # b (-8) was committed before a (-9), so a's program is no new best although its id comes first.
    assert sampler_tally(store) == {"b": {"rows": 1, "ok": 1, "new_bests": 1},
                                    "a": {"rows": 2, "ok": 1, "new_bests": 0},
                                    "tune": {"rows": 1, "ok": 1, "new_bests": 1}}
