"""The VM runtime's own records: atomic, safe from concurrent writers, gone for good on release."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from crio_plugins.runtime_clear.pods import POD_STATE, PodVM, read_json, write_json


def _pod(run_dir: Path) -> PodVM:
    return PodVM(pod_sandbox_id="p1", run_dir=run_dir, vm_dir=run_dir / "vm", netns="/ns/p1")


def test_concurrent_saves_never_share_a_temporary_file(tmp_path: Path) -> None:
    # Two threads saving one record at once once made the second's rename fail
    # (FileNotFoundError on vm-sandbox.json.tmp): RunPodSandbox answered INTERNAL.
    pods = [_pod(tmp_path), _pod(tmp_path)]  # two objects: the file is the only thing shared
    errors: list[BaseException] = []

    def save_many(pod: PodVM) -> None:
        try:
            for seq in range(300):
                pod.last_seq = seq
                pod.save()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=save_many, args=(p,)) for p in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert read_json(tmp_path / POD_STATE)["last_seq"] == 299  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == [POD_STATE]


def test_a_released_record_is_not_written_again(tmp_path: Path) -> None:
    pod = _pod(tmp_path)
    pod.save()
    pod.release_record()
    assert not (tmp_path / POD_STATE).exists()
    pod.save()  # the event saver may come late: it must not bring the record back
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    try:
        write_json(target, {"not json": object()})
    except TypeError:
        pass
    else:
        raise AssertionError("an object that is not JSON was written")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
