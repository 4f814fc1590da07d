"""A tenant's capability contract cannot stall the operator (issue 28, findings 1, 13, 14).

The schema and the answer are both the tenant's; they are judged in worker processes within the
contract's deadline, one namespace at a time, and the verdict never echoes the answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from svcreg.core.contracts import schema_problem, spec_problem
from svcreg.core.model import ServiceRegistrationSpec
from svcreg.operator import verification
from svcreg.operator.probes.judge import Judge, judge
from svcreg.operator.targets import Plan

BACKTRACKING = {"type": "string", "pattern": "^(a+)+$"}
# 2**27 steps for Python's backtracking engine: many seconds on the event loop
HOSTILE_ANSWER = json.dumps("a" * 27 + "!").encode()
PLAIN = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}


@pytest.fixture
async def workers() -> Any:
    found = Judge(workers=2, max_seconds=1.0)
    yield found
    found.close()


async def test_a_backtracking_pattern_is_judged_off_the_loop_and_ends_at_its_deadline(workers: Judge) -> None:
    """While a hostile judgement runs, another namespace's contract is judged: the loop was never
    held. The hostile one ends JudgeTimeout at its deadline and its worker is killed."""
    hostile = asyncio.create_task(
        workers.verdict(
            "evil", status=200, body=HOSTILE_ANSWER, schema=BACKTRACKING, asked="GET /x", seconds=60
        )
    )
    honest = await workers.verdict(
        "team-b", status=200, body=b'{"answer": 1}', schema=PLAIN, asked="GET /ok", seconds=60
    )
    assert honest.reason == "ContractKept"
    assert not hostile.done()
    found = await hostile
    assert (found.passed, found.reason) == (False, "JudgeTimeout")
    assert workers.killed == 1
    again = await workers.verdict(
        "team-b", status=200, body=b'{"answer": "x"}', schema=PLAIN, asked="GET /ok", seconds=60
    )
    assert again.reason == "SchemaViolation"  # a killed worker is replaced


async def test_unique_items_over_a_large_answer_is_bounded_too(workers: Judge) -> None:
    schema = {"type": "array", "uniqueItems": True}
    answer = json.dumps([{"n": n} for n in range(30_000)]).encode()  # unhashable: quadratic
    found = await workers.verdict("evil", status=200, body=answer, schema=schema, asked="GET /x", seconds=60)
    assert found.reason == "JudgeTimeout"


async def test_one_namespace_holds_at_most_one_worker(workers: Judge) -> None:
    """Two hostile contracts of one namespace: the second waits behind the first (within its own
    deadline) instead of taking the other worker, which the next namespace gets."""
    first = asyncio.create_task(
        workers.verdict(
            "evil", status=200, body=HOSTILE_ANSWER, schema=BACKTRACKING, asked="GET /1", seconds=60
        )
    )
    second = asyncio.create_task(
        workers.verdict(
            "evil", status=200, body=HOSTILE_ANSWER, schema=BACKTRACKING, asked="GET /2", seconds=60
        )
    )
    await asyncio.sleep(0)
    honest = await workers.verdict(
        "team-b", status=200, body=b'{"answer": 1}', schema=PLAIN, asked="GET /ok", seconds=60
    )
    assert honest.passed
    assert [(await first).reason, (await second).reason] == ["JudgeTimeout", "JudgeTimeout"]
    assert workers.killed == 1  # the second never got a worker: its deadline passed in the queue


def test_a_violation_names_the_rule_and_path_never_the_answer() -> None:
    schema = {"type": "object", "properties": {"token": {"type": "string", "maxLength": 3}}}
    found = judge(200, b'{"token": "s3cr3t-from-the-endpoint"}', schema, "GET /x")
    assert found.reason == "SchemaViolation"
    assert "s3cr3t" not in found.message
    assert "/token" in found.message and "maxLength" in found.message
    wrong_type = judge(200, b'["s3cr3t"]', {"type": "object"}, "GET /x")
    assert "s3cr3t" not in wrong_type.message and "type" in wrong_type.message
    not_json = judge(200, b"s3cr3t <html>", {"type": "object"}, "GET /x")
    assert (not_json.reason, "s3cr3t" in not_json.message) == ("NotJson", False)
    missing = judge(200, b"{}", PLAIN, "GET /x")
    assert "'answer' is a required property" in missing.message  # the schema's own words


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"$ref": "#/$defs/missing"}, "does not resolve inside the schema"),
        ({"properties": {"a": {"$ref": "http://169.254.169.254/latest"}}}, "must point inside the schema"),
        ({"$id": "https://example.com/s", "type": "object"}, "$id is not supported"),
        ({"$dynamicRef": "#nowhere"}, "does not resolve"),
    ],
)
def test_a_reference_that_does_not_resolve_inside_the_schema_is_refused_at_apply(
    schema: dict[str, Any], said: str
) -> None:
    problem = schema_problem(schema)
    assert problem is not None and said in problem
    spec, why = spec_problem(
        {
            "endpoint": "http://a.b:80",
            "capabilities": [{"name": "ask", "outputSchema": schema, "contract": {"path": "/ask"}}],
        }
    )
    assert spec is None and why is not None and why.startswith("spec.capabilities[0].outputSchema:")


def test_references_inside_the_schema_are_accepted_and_applied() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert schema_problem(schema) is None
    assert judge(200, b'{"a": 1}', schema, "GET /x").passed
    assert judge(200, b'{"a": "x"}', schema, "GET /x").reason == "SchemaViolation"


async def test_a_contract_that_cannot_be_checked_never_stops_the_probe_job() -> None:
    class Boom(verification.ContractChecker):
        async def _check(self, *args: Any) -> Any:
            raise RuntimeError("schema machinery failed")

    checker = Boom(None, _Metrics(), lambda: 100.0)  # type: ignore[arg-type]
    spec = ServiceRegistrationSpec.model_validate(
        {
            "endpoint": "http://a.b:80",
            "capabilities": [{"name": "ask", "outputSchema": PLAIN, "contract": {}}],
        }
    )
    checked: verification.Checked = {}
    await checker.check_due(spec, ("ns", "one"), Plan(targets={}), checked)  # does not raise
    assert checked["ask"][1].reason == "ContractError"
    checker.close()


class _Metrics:
    class _Counter:
        def labels(self, *_: str) -> Any:
            return self

        def inc(self) -> None:
            pass

    contract_checks = _Counter()
