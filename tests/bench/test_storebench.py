"""bench.storebench and --restart at a small size: every layout ends up holding the same chats."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import storebench, storerestart
from bench.storeload import Generator, default_limits
from broker.store import Store
from broker.streams import Limits

ROOMS, HISTORY = 10, 50


def _plan() -> storebench.Plan:
    gen = Generator(ROOMS, default_limits(history_size=HISTORY))
    fill = list(gen.fill())
    timed = [(64, gen.turns(1000, 64))]
    return storebench.Plan(ROOMS, fill, timed, gen.held)


def test_the_generator_fills_history_then_releases_a_chat_for_each_one_stored() -> None:
    gen = Generator(ROOMS, default_limits(history_size=HISTORY))
    list(gen.fill())
    assert gen.held == ROOMS * HISTORY
    turn = gen.turn(64)
    assert len(turn.appended) == len(turn.released) == 64
    assert {t for t, _ in turn.released} <= {t for t, _, _, _ in turn.appended}
    # The tops are the rooms' last offsets, and what is released lies HISTORY below them.
    for topic, _, top in turn.tops:
        stream = gen.sequencer.stream(topic)
        assert stream is not None and stream.top == top
        assert max(o for t, o in turn.released if t == topic) == top - HISTORY


def test_every_layout_holds_the_same_chats_after_the_same_turns(tmp_path: Path) -> None:
    plan = _plan()
    held: dict[str, set[tuple[bytes, int]]] = {}
    for name in ("sqlite-log", "sqlite-keyed", "lmdb"):
        if name == "lmdb" and storebench.lmdb_missing():
            continue
        directory = tmp_path / name
        directory.mkdir()
        store = storebench.CANDIDATES[name](directory)
        for turn in plan.fill + plan.timed[0][1]:
            store.write(turn)
        store.close()
        held[name] = _keys(name, directory)
    assert len(held["sqlite-log"]) == plan.held == ROOMS * HISTORY
    for name, keys in held.items():
        assert keys == held["sqlite-log"], name


def _keys(name: str, directory: Path) -> set[tuple[bytes, int]]:
    if name == "sqlite-log":
        with sqlite3.connect(directory / "streams.db") as db:
            return {(t, o) for t, o in db.execute("SELECT topic, low FROM chats")}
    if name == "sqlite-keyed":
        with sqlite3.connect(directory / "keyed.db") as db:
            return {(t, o) for t, o in db.execute("SELECT topic, offset FROM chats")}
    import lmdb

    env = lmdb.open(str(directory), max_dbs=2, readonly=True)
    try:
        with env.begin(db=env.open_db(b"chats", create=False)) as txn:
            return {(bytes(k[:-8]), int.from_bytes(k[-8:], "big")) for k in txn.cursor().iternext(
                values=False)}
    finally:
        env.close()


def test_the_table_has_a_row_per_layout_and_transaction_size() -> None:
    params = storebench.Params(rooms=(ROOMS,), per_turn=(64, 16), chats=500, repeat=2,
                               candidates=("sqlite-log", "sqlite-keyed"))
    session = storebench.run(params, lambda _: None)
    cells = {(c["candidate"], c["per_turn"]): c for c in session["table"]}
    assert set(cells) == {(n, t) for n in params.candidates for t in (64, 16)}
    for cell in cells.values():
        assert cell["runs"] == 2 and cell["chats_per_cpu_s"] > 0
        assert cell["held"] == ROOMS * 1000 and cell["bytes_per_1000"] > 0
    assert "| sqlite-keyed | 10 | 16 |" in storebench.markdown(session)


@pytest.mark.timeout(60)
def test_a_store_is_read_back_whole_by_open_store_and_by_a_broker(tmp_path: Path) -> None:
    case = storerestart.Case("tiny", 20, 30, 1 << 30, "20 rooms × 30 chats")
    built = storerestart.build(case, tmp_path)
    assert (built["chats"], built["rooms"]) == (600, 20)
    opened = storerestart.open_once(case, tmp_path)
    assert (opened["chats"], opened["rooms"]) == (600, 20)
    ready = storerestart.broker_ready(case.env(tmp_path))
    assert ready["ready_s"] > 0 and ready["store_read_s"] is not None
    # Nothing was lost on the way: the broker read it and wrote nothing of its own.
    store = Store(tmp_path / "streams.db")
    try:
        sequencer = store.load(Limits(30, 3600.0, 1 << 30, 120.0), 0.0)
    finally:
        store.close()
    assert sum(len(s.history) for s in sequencer.streams()) == 600


def test_a_file_cut_short_is_an_error_for_sqlite_and_a_crash_for_lmdb() -> None:
    lines = storebench.truncated(lambda _: None)
    assert "SQLITE_CORRUPT" in lines[0] or "SQLITE_NOTADB" in lines[0], lines
    if not storebench.lmdb_missing():
        assert "killed by SIGBUS" in lines[1], lines
