"""The spool on its own (no network): instances written atomically by study and series, UIDs checked before they
become paths, completion after the idle time, timeouts, late instances, the bound, the outbox, and a restart."""

import json
import os
import time

import pytest

from infnet_monai.net.peers import Peer
from infnet_monai.net.spool import Spool, SpoolFullError, SpoolLockedError, default_spool

STUDY, SERIES, OTHER_SERIES = "1.2.3", "1.2.3.4", "1.2.3.5"


def _age(folder, seconds: float) -> None:
    """Make a series look idle for ``seconds`` (its folder's time is its last arrival)."""
    t = time.time() - seconds
    os.utime(folder, (t, t))


def test_instances_are_grouped_by_study_and_series_and_written_whole(tmp_path):
    with Spool(tmp_path / "spool") as spool:
        a = spool.store(b"first", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        b = spool.store(b"second", STUDY, OTHER_SERIES, "1.9.2", "CT1@10.0.0.2")
        again = spool.store(b"replaced", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        assert a == again == tmp_path / "spool" / "incoming" / STUDY / SERIES / "1.9.1.dcm"
        assert a.read_bytes() == b"replaced" and b.read_bytes() == b"second"
        assert list((tmp_path / "spool" / "tmp").iterdir()) == []  # the temporary copies are gone
        meta = json.loads((tmp_path / "spool" / "incoming" / STUDY / f"{SERIES}.json").read_text())
        assert meta["callers"] == ["PACS@127.0.0.1"] and meta["interrupted"] is False
        assert spool.used_bytes == len(b"replaced") + len(b"second") + sum(
            p.stat().st_size for p in (tmp_path / "spool" / "incoming" / STUDY).glob("*.json")
        )
        assert sorted(e.series_uid for e in spool.receiving()) == [SERIES, OTHER_SERIES]


@pytest.mark.parametrize(
    "study, series, sop",
    [
        ("../../outside", SERIES, "1.9"),
        (STUDY, "1.2/../../../outside", "1.9"),
        (STUDY, SERIES, "../../../../outside"),
        (STUDY, "", "1.9"),
        (None, SERIES, "1.9"),
        (STUDY, SERIES, "1." + "9" * 70),
    ],
)
def test_invalid_uids_never_become_paths(tmp_path, study, series, sop):
    root = tmp_path / "spool"
    with Spool(root) as spool:
        before = {p for p in tmp_path.rglob("*")}
        with pytest.raises(ValueError, match="is not a valid UID"):
            spool.store(b"evil", study, series, sop, "PACS@127.0.0.1")
        assert {p for p in tmp_path.rglob("*")} == before  # nothing written, inside the spool or out


def test_idle_series_complete_late_ones_time_out_and_active_ones_wait(tmp_path):
    with Spool(tmp_path / "spool") as spool:
        spool.store(b"x", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        spool.store(b"y", STUDY, OTHER_SERIES, "1.9.2", "PACS@127.0.0.1")
        assert spool.complete_idle(idle_seconds=30, timeout_seconds=3600) == ([], [])  # both just arrived
        _age(tmp_path / "spool" / "incoming" / STUDY / SERIES, 31)
        completed, timed_out = spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        assert [e.series_uid for e in completed] == [SERIES] and timed_out == []
        assert (tmp_path / "spool" / "queue" / STUDY / SERIES / "1.9.1.dcm").read_bytes() == b"x"
        # the other series is still receiving an hour after its first instance: set aside, with its instances
        meta_path = tmp_path / "spool" / "incoming" / STUDY / f"{OTHER_SERIES}.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "first": time.time() - 3601}))
        spool.store(b"y2", STUDY, OTHER_SERIES, "1.9.4", "PACS@127.0.0.1")
        completed, timed_out = spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        assert completed == [] and [e.series_uid for e in timed_out] == [OTHER_SERIES]
        assert sorted(p.name for p in timed_out[0].folder.iterdir()) == ["1.9.2.dcm", "1.9.4.dcm"]
        assert timed_out[0].folder == tmp_path / "spool" / "failed" / STUDY / OTHER_SERIES

        entry = spool.take()
        assert entry.series_uid == SERIES and spool.take() is None  # one case at a time
        # an instance of the series being segmented starts a new receiving folder, which waits for that case
        spool.store(b"late", STUDY, SERIES, "1.9.3", "PACS@127.0.0.1")
        _age(tmp_path / "spool" / "incoming" / STUDY / SERIES, 60)
        assert spool.complete_idle(idle_seconds=30, timeout_seconds=3600) == ([], [])
        spool.finish(entry)
        completed, _ = spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        # then it is segmented whole: the late instance and the earlier one
        assert [e.series_uid for e in completed] == [SERIES]
        assert sorted(p.name for p in completed[0].folder.iterdir()) == ["1.9.1.dcm", "1.9.3.dcm"]
        assert not (tmp_path / "spool" / "done" / STUDY).exists()


def test_a_queued_series_that_gets_more_instances_receives_again(tmp_path):
    with Spool(tmp_path / "spool") as spool:
        spool.store(b"x", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        _age(tmp_path / "spool" / "incoming" / STUDY / SERIES, 60)
        spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        spool.store(b"y", STUDY, SERIES, "1.9.2", "CT2@10.0.0.9")
        assert spool.queued() == []
        (entry,) = spool.receiving()
        assert sorted(p.name for p in entry.folder.iterdir()) == ["1.9.1.dcm", "1.9.2.dcm"]
        assert entry.meta["callers"] == ["PACS@127.0.0.1", "CT2@10.0.0.9"]


def test_restart_picks_up_every_state_and_clears_half_written_files(tmp_path):
    root = tmp_path / "spool"
    with Spool(root) as spool:
        spool.store(b"r", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        spool.store(b"q", STUDY, OTHER_SERIES, "1.9.2", "PACS@127.0.0.1")
        _age(root / "incoming" / STUDY / OTHER_SERIES, 60)
        spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        taken = spool.take()  # being segmented when the process is killed
        assert taken.series_uid == OTHER_SERIES
        result = tmp_path / "segmentation.dcm"
        result.write_bytes(b"seg")
        spool.outbox.add(result, "1.8.1", Peer("PACS", "127.0.0.1", 104))
    (root / "tmp" / "instance.x.part").write_bytes(b"half")  # what a kill during a write leaves
    with Spool(root) as spool:
        assert [e.series_uid for e in spool.receiving()] == [SERIES]
        assert spool.take().series_uid == OTHER_SERIES  # the interrupted case is segmented again
        ((peer, files),) = spool.outbox.pending()
        assert peer == Peer("PACS", "127.0.0.1", 104) and [f.read_bytes() for f in files] == [b"seg"]
        assert list((root / "tmp").iterdir()) == []
        spool.outbox.sent(files[0])
        assert spool.outbox.pending() == []


def test_a_second_process_on_the_same_spool_is_refused(tmp_path):
    with Spool(tmp_path / "spool"):
        with pytest.raises(SpoolLockedError, match="in use by another infnet-covid process"):
            Spool(tmp_path / "spool").open()


def test_the_bound_evicts_segmented_series_first_then_refuses_and_keeps_what_it_has(tmp_path):
    root = tmp_path / "spool"
    with Spool(root, max_bytes=3000, min_free_bytes=0) as spool:
        spool.store(b"a" * 1000, STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        _age(root / "incoming" / STUDY / SERIES, 60)
        spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        spool.finish(spool.take())  # segmented: it may go when room is needed
        spool.store(b"b" * 1000, STUDY, OTHER_SERIES, "1.9.2", "PACS@127.0.0.1")
        assert spool.has_room(500)
        spool.store(b"c" * 1500, STUDY, OTHER_SERIES, "1.9.3", "PACS@127.0.0.1")  # fits once the done series goes
        assert not (root / "done" / STUDY / SERIES).exists()
        assert not spool.has_room(1000)
        with pytest.raises(SpoolFullError, match="is full: it holds") as raised:
            spool.store(b"d" * 1000, STUDY, OTHER_SERIES, "1.9.4", "PACS@127.0.0.1")
        assert raised.value.errno == 28  # ENOSPC: an OSError like a full disk
        kept = root / "incoming" / STUDY / OTHER_SERIES
        assert sorted(p.name for p in kept.iterdir()) == ["1.9.2.dcm", "1.9.3.dcm"]
        # a result always enters the outbox, past the bound
        result = tmp_path / "sr.dcm"
        result.write_bytes(b"s" * 2000)
        spool.outbox.add(result, "1.8.2", Peer("PACS", "127.0.0.1", 104))
        assert spool.outbox.count() == 1


def test_segmented_series_leave_after_their_time(tmp_path):
    root = tmp_path / "spool"
    with Spool(root, keep_seconds=100) as spool:
        spool.store(b"a", STUDY, SERIES, "1.9.1", "PACS@127.0.0.1")
        _age(root / "incoming" / STUDY / SERIES, 60)
        spool.complete_idle(idle_seconds=30, timeout_seconds=3600)
        spool.finish(spool.take())
        spool.remove_expired()
        assert (root / "done" / STUDY / SERIES).is_dir()
        spool.remove_expired(now=time.time() + 101)
        assert not (root / "done" / STUDY).exists() and spool.used_bytes == 0


def test_default_spool_lies_beside_output(tmp_path):
    assert default_spool(tmp_path / "out") == tmp_path / "out.spool"
    assert default_spool(str(tmp_path / "out") + "/") == tmp_path / "out.spool"
