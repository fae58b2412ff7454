"""LLM agents under the study harness (``--brain openai --harness study``): the study's board
text, conversation window and action tags, against the fake chat server (a real HTTP server on
loopback); one sweep through the experiment command on a real cluster."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from quorumboard.agents.brains.llm import LLMConfig
from quorumboard.agents.brains.study_prompt import (
    FAILED,
    PASSED,
    CompileCheckStore,
    StudyChatBrain,
    StudyRepoError,
    check_files,
    first_messages,
    load_study_prompt,
    our_prompt,
    parse_study_reply,
    project_intro,
    render_board,
    strip_fences,
)
from quorumboard.agents.study.experiment import read_results
from quorumboard.agents.team.actions import ClaimTask, CompleteTask, TaskView, View, WriteFile
from quorumboard.agents.team.events import RunEvent, read_events
from quorumboard.agents.team.study_harness import MemoryStore, study_deal
from quorumboard.agents.team.tasks import Project, Task
from tests.fake_llm import FakeLLM

FILES = {"task-1": "alpha.py", "task-2": "beta.py", "task-3": "gamma.py"}
PROJECT = Project(
    name="Tiny Utils", description="Each task writes one flat file: task-1 alpha.py, task-2 "
    "beta.py, task-3 gamma.py.", success_criteria="All three functions exist.",
    repository="repo", suite="tiny", level="p03",
    tasks=(Task(id="task-1", title="Implement alpha", files=("alpha.py",)),
           Task(id="task-2", title="Implement beta", dependencies=("task-1",),
                files=("beta.py",)),
           Task(id="task-3", title="Implement gamma", files=("gamma.py",))))


def _view(mode: str = "decentralized", round_: int = 1, **owners: str) -> View:
    return View(agent="a0", team=("a0", "a1"), round=round_, time_s=0.0, mode=mode,
                tasks=tuple(TaskView(id=t.id, title=t.title, dependencies=t.dependencies,
                                     files=t.files, description="never shown",
                                     owner=owners.get(t.id.replace("-", "_")))
                            for t in PROJECT.tasks))


def _brain(llm: FakeLLM, agent: str = "a0", **kw: Any) -> StudyChatBrain:
    return StudyChatBrain(LLMConfig(base_url=llm.base_url, model="fake-model", timeout_s=10,
                                    retries_max=0), agent, **kw)


# ------------------------------------------------------------------------------ rendering


def test_board_lines_are_the_studys_exactly() -> None:
    view = View(agent="a0", team=("a0", "a1"), round=3, time_s=1.0, mode="decentralized", tasks=(
        TaskView(id="task-1", title="Implement add", status="done", owner="a0",
                 description="Create add.py", files=("add.py",)),
        TaskView(id="task-2", title="Implement safe_add", status="claimed", owner="a1",
                 dependencies=("task-1",), files=("safe_add.py",)),
        TaskView(id="task-3", title="Implement mul", status="pending", owner="a0"),
        TaskView(id="task-4", title="Implement div", dependencies=("task-1", "task-3"))))
    assert render_board(view) == (
        "=== CURRENT TASKS ===\n\n"
        "✅ task-1: Implement add (Owner: a0)\n"
        "🔨 task-2: Implement safe_add (Owner: a1) [Requires: task-1]\n"
        "📌 task-3: Implement mul (Owner: a0)\n"
        "⏳ task-4: Implement div (Unassigned) [Requires: task-1, task-3]")


def _contents(body: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in body["messages"]]


def test_first_round_then_a_window_of_the_last_20_messages() -> None:
    with FakeLLM("text", responder=lambda body: "Waiting.") as llm:
        brain = _brain(llm)
        brain.bind_study_run(PROJECT, MemoryStore())
        for r in range(1, 14):
            brain.decide(_view("preassign", r, task_1="a0", task_2="a0", task_3="a1"))
        bodies = llm.requests
    first = bodies[0]
    assert "tools" not in first and first["messages"][0] == {"role": "system",
                                                            "content": our_prompt().text}
    assert _contents(first)[1:] == [
        "[From System]: Pre-assignment: your tasks for this run are task-1, task-2.\nClaim and "
        "complete only these, in this order. Leave tasks that belong to other agents alone.",
        "[From System]: === PROJECT: Tiny Utils ===\n" + PROJECT.description
        + "\n\nSuccess Criteria: All three functions exist.\n\nRepository: repo",
        "[From System]: " + render_board(_view("preassign", 1, task_1="a0", task_2="a0",
                                               task_3="a1"))]
    assert not any("never shown" in c for c in _contents(first))
    assert "alpha.py" not in _contents(first)[3]  # the board names no files
    # Round r sends the system prompt, min(20, history) messages, then the new board; the
    # history grows by 2 a round (board + answer) after round one's 4.
    assert len(first["messages"]) == 4
    for r, body in enumerate(bodies[1:], start=2):
        assert len(body["messages"]) == 1 + min(20, 4 + 2 * (r - 2)) + 1, r
        assert body["messages"][-1]["role"] == "user"
    last = _contents(bodies[-1])
    assert last[0] == our_prompt().text  # the system prompt outlives the window
    assert not any("Pre-assignment" in c or "=== PROJECT" in c for c in last)
    assert _contents(bodies[9])[1].startswith("[From System]: Pre-assignment")
    assert not any("Pre-assignment" in c for c in _contents(bodies[10]))
    assert [m["role"] for m in bodies[-1]["messages"][1:]] == ["user", "assistant"] * 10 + ["user"]


def test_the_notice_lists_the_deal_in_order_and_an_agent_dealt_nothing_gets_none() -> None:
    chain = Project(name="c", tasks=(Task(id="t3", dependencies=("t1",)), Task(id="t1"),
                                     Task(id="t2")))
    owners = study_deal(chain, ("a0", "a1", "a2"))
    assert owners == {"t1": "a0", "t3": "a0", "t2": "a1"}
    view = View(agent="a0", team=("a0", "a1", "a2"), round=1, time_s=0.0, mode="preassign",
                tasks=tuple(TaskView(id=t.id, dependencies=t.dependencies, owner=owners[t.id])
                            for t in chain.tasks))
    assert first_messages(view, "a0", chain)[0].startswith(
        "Pre-assignment: your tasks for this run are t1, t3.")
    assert first_messages(view, "a2", chain) == [project_intro(chain)]
    assert first_messages(view.model_copy(update={"mode": "decentralized"}), "a0", None) == [
        "=== PROJECT ==="]


def test_a_test_run_result_arrives_before_the_next_board() -> None:
    store = MemoryStore()
    with FakeLLM("text", responder=lambda body: "<run_tests />") as llm:
        brain = _brain(llm)
        checked = brain.bind_study_run(PROJECT, store)
        assert isinstance(checked, CompileCheckStore)
        assert brain.decide(_view()).run_tests
        checked.put_file("a0", "alpha.py", "def alpha(:\n")
        checked.files("a0")  # the engine's test run
        brain.decide(_view(round_=2))
        checked.put_file("a1", "alpha.py", "def alpha():\n    return 1\n")
        checked.put_file("a1", "beta.py", "def beta():\n    return 2\n")
        checked.put_file("a1", "gamma.py", "x = 1\n")
        assert set(checked.files("a1")) == {"alpha.py", "beta.py", "gamma.py"}
        assert set(checked.files("a0")) == {"alpha.py", "beta.py", "gamma.py"}
        brain.decide(_view(round_=3))
        bodies = llm.requests
    failed, board = _contents(bodies[1])[-2:]
    assert failed.startswith(f"[From System]: {FAILED}\n")
    assert "MISSING beta.py" in failed and "FAILED alpha.py: does not compile" in failed
    assert board.startswith("[From System]: === CURRENT TASKS ===")
    assert _contents(bodies[2])[-2] == f"[From System]: {PASSED}"
    assert store.ops == 7  # every call went through to the run's store


def test_compile_check_never_runs_the_code_and_hides_broken_files(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\ndef alpha():\n    return 1\n"
    passed, report = check_files({"alpha.py": evil, "beta.py": "def beta(): pass",
                                  "gamma.py": "def gamma(:", "notes.txt": "not python ("},
                                 PROJECT)
    assert not passed and not marker.exists()
    lines = report.splitlines()
    assert len(lines) == 2 and lines[0].startswith("FAILED gamma.py: does not compile: line 1:")
    assert lines[1] == "1 problem(s); 3 Python file(s) compiled, 3 project file(s) expected"
    assert check_files({"alpha.py": evil, "beta.py": "", "gamma.py": ""}, PROJECT)[0]
    assert not marker.exists()
    store = CompileCheckStore(MemoryStore(), PROJECT)
    store.put_file("a0", "gamma.py", "def gamma(:")
    store.put_file("a0", "alpha.py", evil)
    assert set(store.files("a0")) == {"alpha.py"} and not marker.exists()


# -------------------------------------------------------------------------------- parsing


def test_tags_are_grouped_stripped_and_bad_ones_are_named() -> None:
    got = parse_study_reply(
        'Plan: <complete_task id="task-1" /> first.\n<claim_task id="task-2"/>\n'
        '<edit_file path="repo/pkg/beta.py">\n```python\ndef beta():\n    return 2\n```\n'
        '</edit_file>\n<run_tests />  <run_tests/>\n<claim_task id=task-3 />\n'
        '<edit_file path="x.py">never closed\n<broadcast>hello</broadcast>\n'
        f'<complete_task id="{"t" * 65}" />')
    assert got.actions == (
        WriteFile(file="pkg/beta.py", content="def beta():\n    return 2", passes=True),
        ClaimTask(task="task-2"), CompleteTask(task="task-1"))
    assert got.run_tests
    notes = [str(p) for p in got.problems]
    assert [(p.kind, p.tag) for p in got.problems] == [
        ("malformed", "claim_task"), ("malformed", "edit_file"),
        ("unsupported", "broadcast"), ("too-long", "complete_task")]
    assert notes[0].startswith("malformed <claim_task>: not a complete tag at char ")
    assert "<claim_task id=task-3 />" in notes[0]


def test_fences_edit_paths_and_failing_writes() -> None:
    assert strip_fences("```py\nx = 1\n```") == "x = 1"
    assert strip_fences("```\nx = 1") == "x = 1" and strip_fences("x = 1\n```  \n") == "x = 1"
    assert strip_fences("```x = 1```") == "```x = 1```"  # no fence line: left as written
    got = parse_study_reply('<edit_file path="repo/a.py">def a(:</edit_file>'
                            '<edit_file path="README.md">not (python</edit_file>'
                            '<edit_file path="repo/">x</edit_file>')
    assert got.actions == (WriteFile(file="a.py", content="def a(:", passes=False),
                           WriteFile(file="README.md", content="not (python", passes=True))
    assert [p.kind for p in got.problems] == ["invalid"]
    assert parse_study_reply("no tags at all").actions == ()


def test_messages_a_failed_exchange_never_delivered_go_with_the_next_one() -> None:
    with FakeLLM("flaky", fail_first=1, fail_status=400) as llm:
        brain = _brain(llm)
        failed = brain.decide(_view())
        brain.decide(_view(round_=2))
        bodies = llm.requests
    assert failed.actions == () and failed.invalid[0].startswith("llm error: HTTP 400")
    assert [c.split("\n")[0] for c in _contents(bodies[1])[1:]] == [
        "[From System]: === PROJECT ===",
        "[From System]: === CURRENT TASKS ===", "[From System]: === CURRENT TASKS ==="]
    assert brain.history[-1]["role"] == "assistant" and brain.buffer == []


def test_a_reply_without_text_is_a_note_not_a_crash() -> None:
    with FakeLLM("scripted", script=[("claim_task", {"task": "task-1"})]) as llm:
        reply = _brain(llm).decide(_view())
    assert reply.actions == () and reply.invalid[0].startswith("no-text <reply>")


# -------------------------------------------------------------------------- --study-repo


ROLE_SOURCE = '''
class TeammateAgent:
    def _build_teammate_prompt(self, base_prompt: str) -> str:
        text = f"""
{base_prompt}

ROLE: act with <claim_task id="x" /> and friends.
"""
        return text
'''


def _checkout(root: Path, role: str | None = ROLE_SOURCE, base: str | None = "Base text.\n"
              ) -> Path:
    (root / "agents" / "prompts").mkdir(parents=True)
    if base is not None:
        (root / "agents" / "prompts" / "teammate_prompt.txt").write_text(base)
    if role is not None:
        (root / "agents" / "teammate_agent.py").write_text(role)
    return root


def test_study_repo_supplies_the_prompt_and_is_recorded(tmp_path: Path) -> None:
    prompt = load_study_prompt(_checkout(tmp_path / "study"))
    text = '\nBase text.\n\n\nROLE: act with <claim_task id="x" /> and friends.\n'
    assert prompt.text == text and prompt.source == "study"
    assert prompt.label == "study:" + hashlib.sha256(text.encode()).hexdigest()
    assert prompt.label != our_prompt().label
    with FakeLLM("text", responder=lambda body: "") as llm:
        _brain(llm, prompt=prompt).decide(_view())
        assert llm.requests[0]["messages"][0] == {"role": "system", "content": text}


@pytest.mark.parametrize("case,named", [
    ("no-dir", "nowhere"), ("no-prompt", "teammate_prompt.txt"),
    ("no-role", "teammate_agent.py"), ("bad-role", "_build_teammate_prompt"),
    ("other-placeholder", "other than {base_prompt}")])
def test_a_bad_study_repo_is_a_typed_error_naming_the_file(tmp_path: Path, case: str,
                                                           named: str) -> None:
    root = tmp_path / "study"
    if case == "no-prompt":
        _checkout(root, base=None)
    elif case == "no-role":
        _checkout(root, role=None)
    elif case == "bad-role":
        _checkout(root, role="def something_else():\n    return 1\n")
    elif case == "other-placeholder":
        _checkout(root, role=ROLE_SOURCE.replace("{base_prompt}", "{base_prompt}{self.name}"))
    else:
        root = tmp_path / "nowhere"
    with pytest.raises(StudyRepoError, match=re.escape(named)):
        load_study_prompt(root)


def test_the_cli_refuses_a_bad_study_repo_before_any_run(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from quorumboard.agents.cli import main

    tasks = tmp_path / "p.json"
    tasks.write_text('{"project": "x", "tasks": [{"id": "t1", "files": ["a.py"]}]}')
    base = ["run", "--tasks", str(tasks), "--out", str(tmp_path / "out"), "--brain", "openai",
            "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main([*base, "--harness", "study", "--study-repo", str(tmp_path)]) == 2
    assert "teammate_prompt.txt: missing" in capsys.readouterr().err
    assert main([*base, "--study-repo", str(tmp_path)]) == 2  # board harness: no such prompt
    assert "--harness study" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------- a sweep on a real cluster

_LINE = re.compile(r"^(\S+) (\S+): .*? \((?:Owner: (\S+)|Unassigned)\)(?: \[Requires: (.*)\])?$")
_CLAIMED = re.compile(r'<claim_task id="([^"]+)" />')


def _edit(task: str) -> str:
    """An edit the way models wrote them: ``repo/`` prefixed, the code in a markdown fence."""
    stem = FILES[task].removesuffix(".py")
    return (f'<edit_file path="repo/{FILES[task]}">\n```python\ndef {stem}():\n'
            f'    return "{task}"\n```\n</edit_file>')


def study_model(body: dict[str, Any]) -> str:
    """A scripted model answering in the study's tags, reading only what the study's agents
    could: the last board, the pre-assignment notice, and its own earlier answers."""
    msgs = [m for m in body["messages"] if isinstance(m.get("content"), str)]
    board = [m["content"] for m in msgs if "=== CURRENT TASKS ===" in m["content"]][-1]
    rows = [_LINE.match(line) for line in board.splitlines()[2:]]
    tasks = {m.group(2): (m.group(1), (m.group(4) or "").split(", ")) for m in rows if m}
    done = {t for t, (icon, _) in tasks.items() if icon == "✅"}
    ready = [t for t, (icon, deps) in tasks.items()
             if all(d in done or not d for d in deps)]
    notice = next((m["content"] for m in msgs if "your tasks for this run are" in m["content"]),
                  None)
    first = not any(m["role"] == "assistant" for m in msgs)
    out = ['<claim_task id=task-1 />'] if first else []  # malformed: no quotes
    if notice is not None:  # pre-assigned: complete, edit, claim (the harness regroups)
        mine = re.findall(r"task-\d+", notice.split("are ", 1)[1])
        todo = [t for t in mine if t in ready and tasks[t][0] == "📌"]
        out += [*(f'<complete_task id="{t}" />' for t in todo), *map(_edit, todo),
                *(f'<claim_task id="{t}" />' for t in todo)]
    else:  # self-claiming: finish what I claimed, then claim a ready task and write it
        claimed = {t for m in msgs if m["role"] == "assistant" for t in _CLAIMED.findall(
            m["content"])}
        out += [f'<complete_task id="{t}" />' for t, (icon, _) in tasks.items()
                if icon == "🔨" and t in claimed]
        free = [t for t in ready if tasks[t][0] == "⏳"]
        if free:
            out += [f'<claim_task id="{free[0]}" />', _edit(free[0])]
    return "I will act now.\n" + "\n".join(out) + "\n<run_tests />" if out else "Waiting."


def _requests_of(llm: FakeLLM, first_user: str) -> list[dict[str, Any]]:
    return [b for b in llm.requests if isinstance(b, dict) and first_user in b["messages"][1]
            ["content"]]


def test_llm_agents_run_a_sweep_under_the_study_harness(tmp_path: Path) -> None:
    from quorumboard.agents.cli import main

    tasks = tmp_path / "tiny" / "p03.json"
    tasks.parent.mkdir()
    tasks.write_text(json.dumps({
        "project": PROJECT.name, "description": PROJECT.description, "repository": "repo",
        "success_criteria": PROJECT.success_criteria,
        "tasks": [t.model_dump(mode="json") for t in PROJECT.tasks]}))
    out = tmp_path / "out"
    with FakeLLM("text", responder=study_model) as llm:
        code = main(["run", "--tasks", str(tasks), "--brain", "openai", "--harness", "study",
                     "--base-url", llm.base_url, "--model", "fake-model", "--timeout-s", "10",
                     "--modes", "preassign,decentralized", "--agents", "2", "--reps", "1",
                     "--round-cap", "8", "--out", str(out), "--no-report"])
        requests = list(llm.requests)
    assert code == 0
    records = {r.spec.mode: r for r in read_results(out / "results.jsonl")}
    assert set(records) == {"preassign", "decentralized"}
    assert sum(r.metrics.messages for r in records.values()) == len(requests)
    for mode, rec in records.items():
        assert rec.metrics.success and rec.metrics.tasks_done == 3, mode
        assert rec.spec.harness == "study" and rec.spec.prompt == our_prompt().label
    assert records["preassign"].metrics.rounds == 2  # task-2 waits a round for task-1
    events: dict[str, list[RunEvent]] = {
        m: read_events(out / "runs" / r.spec.run_id / "events.jsonl") for m, r in records.items()}
    for mode, evs in events.items():
        writes = [e for e in evs if e.kind == "write"]
        assert writes and all(e.file in FILES.values() for e in writes), mode  # no "repo/"
        invalid = [e for e in evs if e.kind == "invalid"]
        assert len(invalid) == 2 and all(str(e.reason).startswith("malformed <claim_task>")
                                         for e in invalid), mode
        tests = [e for e in evs if e.kind == "tests"]
        assert tests[-1].passes and not tests[0].passes, mode  # fences stripped: it compiles
        for e in evs:  # the edit written after the claim in the text ran first
            if e.kind == "claim":
                mine = [x.kind for x in evs if x.agent == e.agent and x.round == e.round]
                assert mine.index("write") < mine.index("claim"), (mode, mine)
    pre = [e.kind for e in events["preassign"] if e.agent == "a1" and e.round == 1]
    assert pre[:4] == ["invalid", "write", "claim", "complete"]  # grouped, not text order
    # What the models read: the pre-assignment deal, the board lines, the test results.
    deal = _requests_of(llm, "Pre-assignment")
    assert {b["messages"][1]["content"].split("\n")[0] for b in deal} == {
        "[From System]: Pre-assignment: your tasks for this run are task-1, task-2.",
        "[From System]: Pre-assignment: your tasks for this run are task-3."}
    assert deal[0]["messages"][3]["content"].splitlines()[2:] == [
        "📌 task-1: Implement alpha (Owner: a0)",
        "📌 task-2: Implement beta (Owner: a0) [Requires: task-1]",
        "📌 task-3: Implement gamma (Owner: a1)"]
    said = [str(m["content"]) for b in requests for m in b["messages"]]
    assert any(s == f"[From System]: {PASSED}" for s in said)
    assert any(s.startswith(f"[From System]: {FAILED}\nMISSING") for s in said)
