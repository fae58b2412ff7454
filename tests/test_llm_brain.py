"""OpenAIBrain against a real (fake) chat-completions server: actions, failures, costs.

No cluster: the brain only talks HTTP to :class:`tests.fake_llm.FakeLLM` on loopback.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from quorumboard.agents.brains import llm as llm_mod
from quorumboard.agents.brains.llm import (
    LLMConfig,
    OpenAIBrain,
    backoff_delay,
    build_messages,
    check_source,
)
from quorumboard.agents.team.actions import (
    ACTIONS_PER_REPLY_MAX,
    Assign,
    ClaimTask,
    CompleteTask,
    Idle,
    TaskView,
    View,
    WriteFile,
)
from tests.fake_llm import FakeLLM

pytestmark = pytest.mark.timeout(60)


def view(agent: str = "a1", mode: str = "decentralized", tasks: tuple[TaskView, ...] = (),
         team: tuple[str, ...] = ("a0", "a1", "a2"), **kw: Any) -> View:
    return View(agent=agent, team=team, round=1, time_s=0.0, mode=mode, tasks=tasks, **kw)


def brain(fake: FakeLLM, agent: str = "a1", **kw: Any) -> OpenAIBrain:
    kw.setdefault("backoff_s", 0.0)
    return OpenAIBrain(LLMConfig(base_url=fake.base_url, model="fake-model", **kw), agent)


T1 = TaskView(id="t1", title="format numbers", files=("fmt_num.py",))
T2 = TaskView(id="t2", title="parse", dependencies=("t1",), files=("parse_it.py",))
T3 = TaskView(id="t3", title="render", files=("render.py",))
T4 = TaskView(id="t4", title="emit", files=("emit.py",))


def user_text(body: dict[str, Any]) -> str:
    (user,) = [m for m in body["messages"] if m["role"] == "user"]
    text: str = user["content"]
    return text


def system_text(body: dict[str, Any]) -> str:
    (system,) = [m for m in body["messages"] if m["role"] == "system"]
    text: str = system["content"]
    return text


# ---------------------------------------------------------------------------------------------
# Expected actions from the worker policy


def test_decentralized_claims_first_ready_task_and_request_is_openai_shaped() -> None:
    with FakeLLM() as fake:
        reply = brain(fake).decide(view(tasks=(T1, T2)))
        assert fake.chat_requests == 1
        body = fake.requests[0]
    assert reply.actions == (ClaimTask(task="t1"),)
    assert reply.invalid == ()
    assert body["model"] == "fake-model"
    assert body["tool_choice"] == "auto"
    assert {t["function"]["name"] for t in body["tools"]} == {
        "claim_task", "write_file", "complete_task", "assign_task", "send_message", "idle"}
    assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object"
               for t in body["tools"])
    assert "claim_task" in system_text(body) and "agent a1" in system_text(body)
    text = user_text(body)
    assert "t2 | pending | - | t1 | parse_it.py | parse" in text
    board = json.loads(text.split("```json\n")[1].split("\n```")[0])
    assert board["ready"] == ["t1"] and board["agent"] == "a1" and board["mode"] == "decentralized"


def test_owned_claimed_task_is_written_with_passing_source_then_completed() -> None:
    claimed = T1.model_copy(update={"status": "claimed", "owner": "a1", "fence": 3})
    with FakeLLM() as fake:
        reply = brain(fake).decide(view(mode="hybrid", tasks=(claimed, T2)))
    assert [type(a) for a in reply.actions] == [WriteFile, CompleteTask]
    write = reply.actions[0]
    assert isinstance(write, WriteFile)
    assert (write.file, write.task, write.passes) == ("fmt_num.py", "t1", True)
    assert "def fmt_num(" in write.content
    assert reply.actions[1] == CompleteTask(task="t1")
    assert reply.invalid == ()


def test_lead_assigns_ready_unowned_tasks_round_robin_to_workers() -> None:
    owned = T4.model_copy(update={"owner": "a2"})
    tasks = (T1, T2, T3, owned, TaskView(id="t5", files=("five.py",)))
    with FakeLLM() as fake:
        reply = brain(fake, agent="a0").decide(view(agent="a0", mode="lead", tasks=tasks))
        system = system_text(fake.requests[0])
    assert reply.actions == (Assign(task="t1", agent="a1"), Assign(task="t3", agent="a2"),
                             Assign(task="t5", agent="a1"))
    assert "LEAD" in system


def test_lead_mode_worker_is_told_to_work_on_assigned_tasks() -> None:
    with FakeLLM() as fake:
        reply = brain(fake, agent="a1").decide(view(mode="lead", tasks=(T1,)))
        system = system_text(fake.requests[0])
    assert reply.actions == (Idle(reason="nothing to do"),)
    assert "assigned to you" in system and "a0" in system


def test_preassign_works_only_on_own_ready_task() -> None:
    mine = T3.model_copy(update={"owner": "a1"})
    theirs = T1.model_copy(update={"owner": "a2"})
    with FakeLLM() as fake:
        reply = brain(fake).decide(view(mode="preassign", tasks=(theirs, mine)))
        idle = brain(fake).decide(view(mode="preassign", tasks=(theirs,)))
        system = system_text(fake.requests[0])
    assert [(type(a), getattr(a, "task", None)) for a in reply.actions] == [
        (WriteFile, "t3"), (CompleteTask, "t3")]
    assert idle.actions == (Idle(reason="nothing to do"),)
    assert "owner is you" in system


def test_prompt_carries_files_stale_owners_and_only_the_last_history_max_messages() -> None:
    from quorumboard.agents.team.actions import FileView
    v = view(tasks=(T1,), files=(FileView(file="fmt_num.py", version=4, author="a2",
                                          passes=False),),
             stale_owners=("a2",), messages=tuple(f"msg-{i:02d}" for i in range(30)))
    text = build_messages(v, "a1", history_max=5)[1]["content"]
    assert "fmt_num.py | v4 | a2 | no" in text
    assert "## Stale owners\na2" in text
    assert [f"msg-{i:02d}" in text for i in (24, 25, 29)] == [False, True, True]
    with FakeLLM() as fake:
        brain(fake, history_max=2).decide(v)
        sent = user_text(fake.requests[0])
    assert "msg-27" not in sent and "msg-28" in sent and "msg-29" in sent


# ---------------------------------------------------------------------------------------------
# Bad tool calls: recorded, never raised


def test_invalid_tool_calls_are_recorded_not_raised() -> None:
    with FakeLLM(behaviour="invalid") as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
    assert reply.actions == ()
    assert len(reply.invalid) == 4
    not_json, unknown, missing, not_object = reply.invalid
    assert not_json.startswith("claim_task: arguments are not JSON")
    assert "unknown tool 'launch_missiles'" in unknown
    assert missing.startswith("complete_task: task") and "required" in missing.lower()
    assert "assign_task: arguments are not a JSON object" in not_object


def test_model_cannot_set_passes_or_kind_and_bad_source_does_not_pass() -> None:
    script = [
        ("write_file", {"file": "fmt_num.py", "content": "def other():\n    pass\n",
                        "task": "t1"}),
        ("write_file", {"file": "fmt_num.py", "content": "def fmt_num(:\n", "task": "t1"}),
        ("write_file", {"file": "fmt_num.py", "content": "x", "task": "t1", "passes": True}),
        ("claim_task", {"task": "t1", "kind": "complete"}),
        ("send_message", {"text": "hi", "to": "a2"}),
    ]
    with FakeLLM(behaviour="scripted", script=script) as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
    writes = [a for a in reply.actions if isinstance(a, WriteFile)]
    assert [w.passes for w in writes] == [False, False]
    assert len(reply.actions) == 3 and reply.actions[2].kind == "message"
    assert len(reply.invalid) == 2
    assert "unexpected argument(s) passes" in reply.invalid[0]
    assert "unexpected argument(s) kind" in reply.invalid[1]


def test_more_than_the_cap_of_tool_calls_is_cut_and_says_so() -> None:
    script = [("idle", {"reason": f"r{i}"}) for i in range(ACTIONS_PER_REPLY_MAX + 3)]
    with FakeLLM(behaviour="scripted", script=script) as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
    assert len(reply.actions) == ACTIONS_PER_REPLY_MAX
    assert reply.actions[-1] == Idle(reason=f"r{ACTIONS_PER_REPLY_MAX - 1}")
    assert reply.invalid == (f"3 tool call(s) cut: at most {ACTIONS_PER_REPLY_MAX} per reply",)


def test_reply_without_tool_calls_has_no_actions_and_no_notes() -> None:
    with FakeLLM(behaviour="scripted", script=[]) as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
        assert "tool_calls" not in fake.responses[0]["choices"][0]["message"]
    assert reply.actions == () and reply.invalid == ()


# ---------------------------------------------------------------------------------------------
# The exchange: retries, failures, costs


@pytest.mark.parametrize("status", [500, 503, 429])
def test_flaky_server_is_retried_until_it_answers(status: int) -> None:
    with FakeLLM(behaviour="flaky", fail_first=2, fail_status=status) as fake:
        reply = brain(fake, retries_max=3).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 3
    assert reply.actions == (ClaimTask(task="t1"),) and reply.invalid == ()


def test_exhausted_retries_give_an_llm_error_reply() -> None:
    with FakeLLM(behaviour="flaky", fail_first=100, fail_status=502) as fake:
        reply = brain(fake, retries_max=2).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 3
    assert reply.actions == ()
    (note,) = reply.invalid
    assert note.startswith("llm error: HTTP 502") and "after 3 attempts" in note


def test_other_4xx_is_not_retried() -> None:
    with FakeLLM(behaviour="flaky", fail_first=100, fail_status=401) as fake:
        reply = brain(fake, retries_max=3).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 1
    (note,) = reply.invalid
    assert note.startswith("llm error: HTTP 401") and "injected 401" in note


def test_timeout_is_recorded_not_raised() -> None:
    with FakeLLM(behaviour="slow", slow_s=10.0) as fake:
        reply = brain(fake, timeout_s=0.3, retries_max=1).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 2
    assert reply.actions == ()
    (note,) = reply.invalid
    assert note.startswith("llm error: timed out after 0.3s")
    assert 0.6 <= reply.latency_s < 5.0


def test_garbage_body_is_recorded_not_raised() -> None:
    with FakeLLM(behaviour="garbage") as fake:
        reply = brain(fake, retries_max=3).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 1
    (note,) = reply.invalid
    assert note.startswith("llm error: malformed response: body is not JSON")


def test_oversized_body_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_mod, "RESPONSE_BYTES_MAX", 2_000)
    script = [("send_message", {"text": "x" * 1_900})]
    with FakeLLM(behaviour="scripted", script=script) as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 1
    (note,) = reply.invalid
    assert note.startswith("llm error: response too large")


def test_body_without_length_is_bounded_while_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_mod, "RESPONSE_BYTES_MAX", 100_000)
    with FakeLLM(behaviour="huge", huge_bytes=1_000_000) as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
        assert fake.chat_requests == 1
    assert reply.invalid == ("llm error: response too large (> 100000 bytes)",)


def test_malformed_tool_call_shapes_are_notes() -> None:
    assert llm_mod.parse_tool_calls(None) == ((), ())
    assert llm_mod.parse_tool_calls({"x": 1})[1] == ("tool_calls is not a list: {'x': 1}",)
    actions, notes = llm_mod.parse_tool_calls(
        ["nope", {"function": {}}, {"function": {"name": "idle", "arguments": ""}}])
    assert actions == (Idle(),)
    assert notes == ("tool call is not an object: nope",
                     "tool call without a function name: {'function': {}}")


def test_connection_refused_is_retried_then_recorded() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", retries_max=2,
                    backoff_s=0.0)
    reply = OpenAIBrain(cfg, "a1").decide(view(tasks=(T1,)))
    (note,) = reply.invalid
    assert note.startswith("llm error: connection failed") and "after 3 attempts" in note


def test_token_usage_and_latency_come_from_the_exchange() -> None:
    with FakeLLM() as fake:
        reply = brain(fake).decide(view(tasks=(T1,)))
        usage = fake.responses[0]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert (reply.tokens_in, reply.tokens_out) == (usage["prompt_tokens"],
                                                   usage["completion_tokens"])
    assert 0.0 < reply.latency_s < 10.0


def test_api_key_is_sent_as_bearer_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QB_TEST_LLM_KEY", "sk-test-123")
    with FakeLLM() as fake:
        b = brain(fake, api_key_env="QB_TEST_LLM_KEY")
        b.decide(view(tasks=(T1,)))
        monkeypatch.delenv("QB_TEST_LLM_KEY")
        b.decide(view(tasks=(T1,)))
        auth = [{k.lower(): v for k, v in h.items()}.get("authorization")
                for h in fake.headers]
    assert auth == ["Bearer sk-test-123", None]


def test_models_endpoint_answers() -> None:
    import urllib.request
    with FakeLLM() as fake, urllib.request.urlopen(f"{fake.base_url}/models", timeout=5) as r:
        data = json.loads(r.read())
    assert data["data"][0]["id"] == "fake-model"


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_config_refuses_non_http_urls_and_unbounded_retries() -> None:
    with pytest.raises(ValueError, match="http"):
        LLMConfig(base_url="file:///etc/passwd", model="m")
    with pytest.raises(ValueError):
        LLMConfig(base_url="http://127.0.0.1:1/v1", model="m", retries_max=1_000)
    assert LLMConfig(base_url="http://h:1/v1/", model="m").base_url == "http://h:1/v1"


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_delay(a, 0.5) for a in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(1, 0.5, retry_after_s=3.0) == 3.0
    assert backoff_delay(1, 0.5, retry_after_s=3600.0) == llm_mod.BACKOFF_CAP_S
    assert backoff_delay(100, 8.0) == llm_mod.BACKOFF_CAP_S


def test_check_source_accepts_a_top_level_function_named_after_the_stem() -> None:
    assert check_source("fmt_num.py", "def fmt_num(x):\n    return f'{x:,}'\n")
    assert check_source("pkg/fmt_num.py", "import math\n\ndef fmt_num(x):\n    return x\n")


@pytest.mark.parametrize("content", [
    "def fmt_num(x):\n    return (\n",            # syntax error
    "def fmt_numb(x):\n    return x\n",           # wrong name
    "class C:\n    def fmt_num(self):\n        pass\n",  # not top level
    "fmt_num = lambda x: x\n",                    # not a def
    "def fmt_num(x):\n    pass\nreturn 1\n",      # only the compiler catches this
    "def fmt_num(x):\n    pass\n\x00",            # null byte
])
def test_check_source_rejects(content: str) -> None:
    assert not check_source("fmt_num.py", content)


def test_check_source_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    content = (f"import os; open({str(marker)!r}, 'w').close(); os._exit(1)\n"
               "def fmt_num(x):\n    return x\n")
    assert check_source("fmt_num.py", content) is True  # it compiles and defines the function
    assert not marker.exists()
