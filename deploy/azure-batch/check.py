"""Loads deploy/azure-batch/job.json and task.json through Microsoft's azure-batch
models (the REST shapes `az batch job create --json-file` and `az batch task
create --json-file` send) and checks them: every key known to the model, the
model's own validation, and a round trip. Also builds the task collection for
a spec of N items (ids flr-0000 … flr-NNNN) the way deploy/README.md describes.
Usage: python3 check.py DIR"""
import json
import sys

import azure.batch.models as m


def load(kind, path):
    with open(path) as f:
        raw = json.load(f)
    cls = getattr(m, kind)
    # from_dict ignores keys it does not know: check every key maps to a field.
    obj = cls.from_dict(raw)
    back = obj.as_dict(keep_readonly=True)
    def keys(d, prefix=""):
        out = set()
        if isinstance(d, dict):
            for k, v in d.items():
                out.add(prefix + k)
                out |= keys(v, prefix + k + ".")
        elif isinstance(d, list):
            for v in d:
                out |= keys(v, prefix)
        return out
    import re
    snake = lambda s: re.sub(r"(?<!^)(?=[A-Z])", "_", s).lower()
    want = {".".join(snake(p) for p in k.split(".")) for k in keys(raw)}
    have = keys(back)
    lost = sorted(want - have)
    assert not lost, f"{path}: keys the {kind} model does not know: {lost}"
    errors = obj.validate()
    assert not errors, f"{path}: {errors}"
    return obj


def main():
    d = sys.argv[1]
    job = load("JobAddParameter", f"{d}/job.json")
    task = load("TaskAddParameter", f"{d}/task.json")
    assert job.pool_info.pool_id
    assert "fleet run" in task.command_line
    codes = {c.code for c in task.exit_conditions.exit_codes}
    assert {0, 4, 7} <= codes, codes
    # The collection for 12 items: one task per item, its index in the id.
    tasks = []
    for i in range(12):
        t = m.TaskAddParameter.from_dict(task.as_dict())
        t.id = f"flr-{i:04d}"
        t.display_name = f"flr fleet item {i}"
        tasks.append(t)
    coll = m.TaskAddCollectionParameter(value=tasks)
    assert not coll.validate()
    print(f"ok: job {job.id}, {len(coll.value)} tasks")


main()
