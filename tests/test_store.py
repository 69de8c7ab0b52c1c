"""The SQLite program store: round trip, durability across connections."""
from evosearch.store import Store


def test_round_trip(tmp_path):
    store = Store(tmp_path / "run.db")
    store.set_meta("config", {"seed": 3, "islands": [1, 2]})
    pid = store.add_prompt("system text", "user text")
    store.begin(5, island=1, parents=[0, 2], sampler="mutate", prompt_id=pid)
    assert store.get(5)["status"] == "pending" and store.get(5)["parents"] == [0, 2]
    store.update(5, code="def f(): pass", status="ok", score=-12.5, descriptors={"size": 4.0},
                 metrics={"bins": 12.5}, syntactic_hash="abc", archive="new")
    store.add_events(5, [{"event": "migrate", "from": 0, "to": 1, "program_id": 5}])
    store.close()

    again = Store(tmp_path / "run.db")  # a new connection sees everything
    row = again.get(5)
    assert (row["status"], row["score"], row["descriptors"], row["metrics"]) == ("ok", -12.5, {"size": 4.0}, {"bins": 12.5})
    assert again.prompt(row["prompt_id"]) == ("system text", "user text")
    assert again.get_meta("config") == {"seed": 3, "islands": [1, 2]}
    assert again.get_meta("missing", "default") == "default"
    assert again.events() == [{"at_commit": 5, "event": "migrate", "from": 0, "to": 1, "program_id": 5}]
    assert again.next_id() == 6 and again.count("status = 'ok'") == 1
    assert [r["id"] for r in again.programs()] == [5]


def test_failure_reasons_are_kept(tmp_path):
    store = Store(tmp_path / "run.db")
    for i, (status, reason) in enumerate([("syntax", "line 2: invalid syntax"), ("timeout", "exceeded 1.0 s")]):
        store.begin(i, island=0, parents=[], sampler="local")
        store.update(i, status=status, reason=reason)
    assert [(r["status"], r["reason"]) for r in store.programs()] == [
        ("syntax", "line 2: invalid syntax"), ("timeout", "exceeded 1.0 s")]
