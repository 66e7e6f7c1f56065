"""Loads deploy/azure-batch/job.json and task.json through Microsoft's azure-batch
models (azure-batch 15: BatchJobCreateOptions and BatchTaskCreateOptions, the
REST bodies of Job - Add and Task - Add, what `az batch job create --json-file`
sends) and checks them: every key is a field of its model (recursively), the
required fields are there, enum values are the service's, and the task
collection for a spec of 12 items (ids flr-0000 … flr-0011, the index mapping
flr documents) builds as a BatchTaskGroup. Usage: python3 check.py DIR"""
import json
import sys

import azure.batch.models as m
from azure.batch._utils.model_base import Model


def fields(cls):
    return {f._rest_name: name for name, f in cls._attr_to_rest_field.items()}


def check(obj, raw, where):
    known = fields(type(obj))
    for key, value in raw.items():
        assert key in known, f"{where}.{key}: not a field of {type(obj).__name__}"
        got = getattr(obj, known[key])
        if isinstance(got, Model) and isinstance(value, dict):
            check(got, value, f"{where}.{key}")
        elif isinstance(got, list):
            for i, (g, v) in enumerate(zip(got, value)):
                if isinstance(g, Model):
                    check(g, v, f"{where}.{key}[{i}]")


def load(cls, path, required):
    with open(path) as f:
        raw = json.load(f)
    obj = cls(raw)
    check(obj, raw, path)
    for r in required:
        assert r in raw, f"{path}: {r} is required"
    return obj, raw


def main():
    d = sys.argv[1]
    job, _ = load(m.BatchJobCreateOptions, f"{d}/job.json", ["id", "poolInfo"])
    task, raw = load(m.BatchTaskCreateOptions, f"{d}/task.json", ["id", "commandLine"])
    assert job.pool_info.pool_id
    actions = {str(v.value) for v in m.BatchJobActionKind}
    deps = {str(v.value) for v in m.DependencyAction}
    allowed_job = {str(v.value) for v in m.BatchAllTasksCompleteMode}
    assert job.all_tasks_complete_mode in allowed_job, job.all_tasks_complete_mode
    ec = task.exit_conditions
    for opt in [c.exit_options for c in ec.exit_codes] + [r.exit_options for r in ec.exit_code_ranges] + [ec.default]:
        assert opt.job_action in actions, opt.job_action
        assert opt.dependency_action is None or opt.dependency_action in deps
    codes = {c.code for c in ec.exit_codes}
    assert {0, 4, 7} <= codes, codes
    assert "fleet run" in task.command_line
    tasks = []
    for i in range(12):
        t = dict(raw)
        t["id"] = f"flr-{i:04d}"
        t["displayName"] = f"flr fleet item {i}"
        tasks.append(m.BatchTaskCreateOptions(t))
    group = m.BatchTaskGroup(task_values=tasks)
    assert len(group.task_values) == 12
    print(f"ok: job {job.id}, {len(tasks)} tasks")


main()
