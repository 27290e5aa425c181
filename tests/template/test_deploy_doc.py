"""Every shell command of docs/deploy.md is run, or checked as far as it can be without AWS.

The commands are read from the doc's ```sh blocks (``\\`` continuations and ``&&`` chains
joined, ``VAR=value`` lines, ``$(...)`` and ``for ... do ... done`` followed) and each is
classified:

- **needs AWS** (``aws ...``, ``sam deploy``, ``sam delete``, ``sam logs``): never run. What
  can be checked offline is: every flag is one the CLI accepts (sam: from
  ``$RELAY_SAM <command> --help`` when ``RELAY_SAM`` is set, else the short lists below;
  aws: the lists below, as no AWS CLI is installed here), every template exists, every
  ``--config-env`` is an environment of samconfig.toml with a section for the command,
  every stack is named ``relay-<stage>-<unit>`` after the template it deploys, every
  parameter override is a parameter of that template (its required ones all given, its
  ``Stage`` the stack's), every logical id named is a resource of the stack's template,
  and every ``file://`` argument exists at that point of its block.
- **runs offline** (``openssl``, ``shred``, ``cat``, ``make`` as ``make -n``,
  ``sam validate`` when ``RELAY_SAM`` is set): run in a temporary directory, in order,
  with their block's AWS commands checked in between.
- **sam build**: its flags, template and config env are checked here; the module-level
  ones the doc shows on their own (not the per-module loop of a new stage, whose builds
  tests/template/test_build.py makes for every template) are run for real when
  ``RELAY_TEST_BUILD=1``, as the doc writes them plus ``--build-dir`` and ``--cache-dir``
  in a temporary directory (the doc's build in source comes from samconfig.toml), with the
  Makefile's offline switches (``LAMBDA_PIP=true``: the test venv's packages stand in for
  the wheels, as tests/template/test_artifacts.py builds).

A command the classifier does not know fails the test, so a new one in the doc gets a check.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from relay.cloud import ROOT
from tests.template import sub_text

DOC = ROOT / "docs" / "deploy.md"
SAMCONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text())

UNIT_TEMPLATE = {
    "platform": "platform/template.yaml",
    "notifications": "modules/notifications/template.yaml",
    "loads": "modules/loads/template.yaml",
    "gatepass": "modules/gatepass/template.yaml",
    "navigate": "modules/navigate/template.yaml",
    "message": "modules/message/template.yaml",
    "gateway": "template.yaml",
    "frontdoor": "frontdoor/template.yaml",  # Regions: once per stage, not in the order
}
UNITS = "|".join(UNIT_TEMPLATE)
# relay-<stage>-<unit>, or a loads cell's relay-<stage>-loads-<cell> (docs/deploy.md, Cells)
STACK_NAME = re.compile(
    rf"relay-(?P<stage>[a-z0-9-]{{1,16}})-(?P<unit>{UNITS})(?:-(?P<cell>cell-[1-9][0-9]?))?"
)

NEEDS_AWS = "needs AWS"
RUNS_OFFLINE = "runs offline"
SAM_BUILD = "sam build"

# Used when RELAY_SAM is not set (else `$RELAY_SAM <command> --help` says): the flags of
# SAM CLI 1.x the doc may use.
SAM_FLAGS = {
    "build": {
        "-t", "--template", "--template-file", "-b", "--build-dir", "-cd", "--cache-dir",
        "--build-in-source", "--no-build-in-source", "-c", "--cached", "--no-cached",
        "-p", "--parallel", "--config-env", "--config-file", "--parameter-overrides",
        "-u", "--use-container", "--region", "--profile", "--debug",
    },
    "deploy": {
        "-t", "--template", "--template-file", "--stack-name", "--capabilities",
        "--resolve-s3", "--s3-bucket", "--s3-prefix", "--parameter-overrides",
        "--config-env", "--config-file", "--confirm-changeset", "--no-confirm-changeset",
        "--fail-on-empty-changeset", "--no-fail-on-empty-changeset", "--disable-rollback",
        "--no-disable-rollback", "--no-execute-changeset", "--region", "--profile", "--tags",
        "--role-arn", "-g", "--guided", "--debug",
    },
    "delete": {
        "--stack-name", "--region", "--profile", "--config-env", "--config-file",
        "--s3-bucket", "--s3-prefix", "--no-prompts", "--debug",
    },
    "logs": {
        "-n", "--name", "--stack-name", "-t", "--tail", "-s", "--start-time", "-e",
        "--end-time", "--filter", "--cw-log-group", "--include-traces", "--output",
        "--region", "--profile", "--config-env", "--config-file", "--debug",
    },
    "validate": {
        "-t", "--template", "--template-file", "--lint", "--region", "--profile",
        "--config-env", "--config-file", "--debug",
    },
}  # fmt: skip
# No AWS CLI here: the flags of each `aws` command the doc uses (AWS CLI v2 reference),
# plus the global ones. A command not listed is unknown.
AWS_GLOBAL_FLAGS = {
    "--query", "--output", "--region", "--profile", "--debug", "--endpoint-url",
    "--no-paginate", "--no-cli-pager", "--color", "--cli-read-timeout",
    "--cli-connect-timeout",
}  # fmt: skip
AWS_FLAGS = {
    ("cloudformation", "deploy"): {
        "--template-file", "--stack-name", "--s3-bucket", "--s3-prefix", "--force-upload",
        "--kms-key-id", "--parameter-overrides", "--capabilities", "--disable-rollback",
        "--no-disable-rollback", "--role-arn", "--notification-arns",
        "--fail-on-empty-changeset", "--no-fail-on-empty-changeset", "--tags",
        "--no-execute-changeset",
    },
    ("cloudformation", "describe-stack-resource"): {"--stack-name", "--logical-resource-id"},
    ("cloudformation", "update-stack"): {
        "--stack-name", "--template-body", "--template-url", "--use-previous-template",
        "--parameters", "--capabilities", "--role-arn", "--notification-arns", "--tags",
        "--disable-rollback", "--no-disable-rollback", "--client-request-token",
        "--resource-types", "--stack-policy-body", "--stack-policy-url",
        "--retain-except-on-create", "--no-retain-except-on-create",
    },
    ("secretsmanager", "create-secret"): {
        "--name", "--client-request-token", "--description", "--kms-key-id",
        "--secret-binary", "--secret-string", "--tags", "--add-replica-regions",
        "--force-overwrite-replica-secret",
    },
    ("lambda", "get-alias"): {"--function-name", "--name"},
    ("lambda", "list-versions-by-function"): {
        "--function-name", "--marker", "--max-items", "--starting-token", "--page-size",
    },
    ("lambda", "update-alias"): {
        "--function-name", "--name", "--function-version", "--description",
        "--routing-config", "--revision-id",
    },
}  # fmt: skip
SHELL_OPERATORS = {"|", "||", ";", "&", ">", ">>", "<", "2>", "2>&1"}
OFFLINE_TOOLS = {"openssl", "shred", "cat"}


# --- reading the doc's commands ---------------------------------------------------------


@dataclass
class Command:
    section: str
    text: str  # the statement as the doc writes it (continuations joined)
    argv: list[str]
    built: str | None  # the template of the last `sam build` before it in its block
    in_loop: bool

    @property
    def id(self) -> str:
        return f"{self.section}: {' '.join(self.argv)[:70]}"


def sh_blocks(doc: str) -> list[tuple[str, str]]:
    """(the heading it is under, its text) of every ```sh block."""
    blocks: list[tuple[str, str]] = []
    lines: list[str] = []
    heading, inside = "", False
    for line in doc.splitlines():
        if inside:
            if line.strip() == "```":
                blocks.append((heading, "\n".join(lines)))
                inside, lines = False, []
            else:
                lines.append(line)
        elif line.strip() == "```sh":
            inside = True
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    assert not inside, "an unclosed ```sh block"
    return blocks


def logical_lines(block: str) -> list[str]:
    """Lines with `\\` continuations and trailing `&&` joined; comment lines dropped."""
    out, current = [], ""
    for raw in block.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line
        if current.endswith("&&"):
            current += " "
            continue
        out.append(current)
        current = ""
    assert not current, f"a continuation runs off the block: {current!r}"
    return out


def split_substitutions(text: str) -> tuple[str, list[str]]:
    """`text` with each top-level `$(...)` replaced by `@SUB<n>@`, and their insides."""
    subs: list[str] = []
    out, start = "", 0
    while (begin := text.find("$(", start)) >= 0:
        depth, end = 1, begin + 2
        while depth:
            assert end < len(text), f"an unclosed $( in {text!r}"
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        out += text[start:begin] + f"@SUB{len(subs)}@"
        subs.append(text[begin + 2 : end - 1])
        start = end
    return out + text[start:], subs


Runner = Callable[[Command], str]


def _placeholder(command: Command) -> str:
    return "<output of " + " ".join(command.argv[:3]) + ">"


@dataclass
class Walk:
    """Follows one block like a shell would, handing each command to `run` in order."""

    section: str
    run: Runner = _placeholder
    env: dict[str, str] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    built: str | None = None
    output: str = ""  # what the last command printed

    def block(self, block: str) -> list[Command]:
        lines = logical_lines(block)
        while lines:
            line = lines.pop(0)
            loop = re.fullmatch(r"for (\w+) in ([^;]+); do", line)
            if not loop:
                self.statement(line, in_loop=False)
                continue
            body = []
            while (inner := lines.pop(0)) != "done":
                body.append(inner)
            for value in self.words(loop[2], in_loop=True):
                self.env[loop[1]] = value
                for inner in body:
                    self.statement(inner, in_loop=True)
        return self.commands

    def words(self, text: str, *, in_loop: bool) -> list[str]:
        replaced, subs = split_substitutions(text)
        tokens = shlex.split(replaced, comments=True)
        return [self.expand(token, subs, in_loop=in_loop) for token in tokens]

    def expand(self, token: str, subs: list[str], *, in_loop: bool) -> str:
        def variable(match: re.Match[str]) -> str:
            name = match[1] or match[2]
            assert name in self.env, f"${name} is not set before it is used ({self.section})"
            return self.env[name]

        token = re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, token)

        def substitution(match: re.Match[str]) -> str:
            inner = Walk(self.section, self.run, self.env, self.commands, self.built)
            before = len(self.commands)
            inner.statement(subs[int(match[1])], in_loop=in_loop, capture=True)
            assert len(self.commands) == before + 1, f"$({subs[int(match[1])]}): one command"
            return inner.output.rstrip("\n")

        return re.sub(r"@SUB(\d+)@", substitution, token)

    def statement(self, text: str, *, in_loop: bool, capture: bool = False) -> None:
        replaced, subs = split_substitutions(text)
        tokens = shlex.split(replaced, comments=True)
        if len(tokens) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):
            name, value = tokens[0].split("=", 1)
            self.env[name] = self.expand(value, subs, in_loop=in_loop)
            return
        chain: list[list[str]] = [[]]
        for token in tokens:
            if token == "&&":
                chain.append([])
            else:
                chain[-1].append(token)
        for part in chain:
            argv = [self.expand(token, subs, in_loop=in_loop) for token in part]
            command = Command(self.section, text, argv, self.built, in_loop)
            self.commands.append(command)
            self.output = self.run(command)
            if argv[:2] == ["sam", "build"]:
                self.built = options(argv, 2)[0].get("--template-file", [None])[0]


def options(argv: list[str], start: int) -> tuple[dict[str, list[str]], list[str]]:
    """({flag: its values}, positional arguments) of argv[start:]; template flags as
    --template-file."""
    flags: dict[str, list[str]] = {}
    positional: list[str] = []
    current: str | None = None
    for token in argv[start:]:
        if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", token):
            current, _, value = token.partition("=")
            if current in {"-t", "--template"} and argv[1] != "logs":
                current = "--template-file"
            flags.setdefault(current, [])
            if value:
                flags[current].append(value)
        elif current is None:
            positional.append(token)
        else:
            flags[current].append(token)
    return flags, positional


def classify(argv: list[str]) -> str | None:
    if not argv or any(t in SHELL_OPERATORS or t.endswith(";") for t in argv):
        return None
    match argv:
        case ["aws", service, operation, *_] if (service, operation) in AWS_FLAGS:
            return NEEDS_AWS
        case ["sam", "deploy" | "delete" | "logs", *_]:
            return NEEDS_AWS
        case ["sam", "build", *_]:
            return SAM_BUILD
        case ["sam", "validate", *_] | ["make", *_]:
            return RUNS_OFFLINE
        case [tool, *_] if tool in OFFLINE_TOOLS:
            return RUNS_OFFLINE
    return None


BLOCKS = sh_blocks(DOC.read_text())
COMMANDS = [c for section, block in BLOCKS for c in Walk(section).block(block)]


def _of(kind: str) -> list[Command]:
    return [c for c in COMMANDS if classify(c.argv) == kind]


# --- what the CLIs accept and what the templates declare --------------------------------


def _offline_env() -> dict[str, str]:
    """No telemetry, and any attempt at the network (SAM's version check) fails at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proxy = "http://127.0.0.1:9"
    env.update(SAM_CLI_TELEMETRY="0", HTTPS_PROXY=proxy, HTTP_PROXY=proxy, NO_PROXY="")
    return env


@functools.cache
def sam_flags(command: str) -> frozenset[str]:
    sam = os.environ.get("RELAY_SAM")
    if not sam:
        return frozenset(SAM_FLAGS[command])
    result = subprocess.run(
        [sam, command, "--help"], capture_output=True, text=True, env=_offline_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    flags = set()
    for line in result.stdout.splitlines():
        if line.strip().startswith("-"):
            spec = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", spec))
    assert {"--config-env", "--help"} <= flags, f"could not read `sam {command} --help`"
    return frozenset(flags)


@functools.cache
def template(path: str) -> dict[str, Any]:
    assert (ROOT / path).is_file(), f"{path} does not exist"
    loaded: dict[str, Any] = yaml_parse((ROOT / path).read_text())
    return loaded


def _stack(name: str) -> tuple[str, str]:
    match = STACK_NAME.fullmatch(name)
    assert match, f"stack {name!r} is not named relay-<stage>-<unit>"
    assert not match["cell"] or match["unit"] == "loads", f"{name}: only loads is celled"
    return match["stage"], match["unit"]


def _check_stack_and_parameters(
    stack: str, template_path: str, overrides: list[str], command: Command
) -> None:
    stage, unit = _stack(stack)
    assert template_path == UNIT_TEMPLATE[unit], (
        f"{command.id}: stack {stack} deploys {template_path}, not {UNIT_TEMPLATE[unit]}"
    )
    parameters = template(template_path).get("Parameters", {})
    given = dict(o.split("=", 1) for o in overrides)
    assert set(given) <= set(parameters), (
        f"{command.id}: not parameters: {set(given) - set(parameters)}"
    )
    required = {name for name, p in parameters.items() if "Default" not in p}
    assert required <= set(given), (
        f"{command.id}: required parameters missing: {required - set(given)}"
    )
    assert given.get("Stage", parameters["Stage"].get("Default")) == stage, (
        f"{command.id}: Stage {given.get('Stage')} for stack {stack}"
    )
    # a loads cell's stack is deployed as that cell, and only a cell's stack with a Cell
    cell = STACK_NAME.fullmatch(stack)["cell"]  # type: ignore[index]
    assert given.get("Cell", "") == (cell or ""), (
        f"{command.id}: stack {stack} deployed with Cell={given.get('Cell', '')!r}"
    )


def _config_section(flags: dict[str, list[str]], section: str) -> dict[str, Any]:
    environment = flags.get("--config-env", ["default"])[0]
    assert environment in SAMCONFIG, f"samconfig.toml has no environment {environment!r}"
    parameters: dict[str, Any] = SAMCONFIG[environment].get(section, {}).get("parameters", {})
    assert parameters, (
        f"samconfig.toml's {environment!r} has no [{environment}.{section}.parameters]"
    )
    return parameters


def check_offline(command: Command) -> None:
    """What can be known of `command` without AWS (or, for sam build, without building)."""
    argv = command.argv
    if argv[0] == "sam":
        flags, positional = options(argv, 2)
        assert not positional, f"{command.id}: stray arguments {positional}"
        unknown = set(flags) - sam_flags(argv[1])
        assert not unknown, f"{command.id}: sam {argv[1]} has no {sorted(unknown)}"
        if "--config-env" in flags or argv[1] in {"build", "deploy"}:
            config = _config_section(flags, argv[1])
        if argv[1] == "build":
            template(flags["--template-file"][0])
        if argv[1] == "deploy":
            path = flags.get("--template-file", [command.built])[0]
            assert path, f"{command.id}: deploys no template (no -t, no sam build before it)"
            overrides = flags.get("--parameter-overrides") or shlex.split(
                config.get("parameter_overrides", "")
            )
            _check_stack_and_parameters(flags["--stack-name"][0], path, overrides, command)
        if argv[1] in {"delete", "logs"} and "--stack-name" in flags:
            _stack(flags["--stack-name"][0])
        return
    assert argv[0] == "aws", command.id
    flags, positional = options(argv, 3)
    assert not positional, f"{command.id}: stray arguments {positional}"
    unknown = set(flags) - AWS_FLAGS[argv[1], argv[2]] - AWS_GLOBAL_FLAGS
    assert not unknown, f"{command.id}: aws {argv[1]} {argv[2]} has no {sorted(unknown)}"
    match argv[1:3]:
        case ["cloudformation", "deploy"]:
            _check_stack_and_parameters(
                flags["--stack-name"][0],
                flags["--template-file"][0],
                flags.get("--parameter-overrides", []),
                command,
            )
        case ["cloudformation", "describe-stack-resource"]:
            _, unit = _stack(flags["--stack-name"][0])
            resources = template(UNIT_TEMPLATE[unit])["Resources"]
            for logical_id in flags["--logical-resource-id"]:
                assert logical_id in resources, f"{command.id}: no {logical_id} in {unit}"
        case ["secretsmanager", "create-secret"]:
            # the name the modules' deploy hooks read (relay-<stage>-identity-??????)
            name = flags["--name"][0]
            assert re.fullmatch(r"relay-[a-z0-9-]{1,16}-identity", name), name


# --- the tests ---------------------------------------------------------------------------


def test_the_doc_s_commands_are_read_and_each_is_classified():
    assert len(BLOCKS) >= 3, BLOCKS
    unknown = [c.id for c in COMMANDS if classify(c.argv) is None]
    assert not unknown, f"commands this test does not know (add a check): {unknown}"
    counts = {kind: len(_of(kind)) for kind in (NEEDS_AWS, RUNS_OFFLINE, SAM_BUILD)}
    assert all(counts.values()), counts


def test_the_classifier_refuses_what_it_does_not_know():
    for argv in (["curl", "x"], ["sam", "sync"], ["aws", "s3", "rm"], ["cat", "a", "|", "b"]):
        assert classify(argv) is None, argv
    walk = Walk("t")
    walk.block('A=x\nfor m in a b; do\n  sam build -t "modules/$m/t.yaml" &&\n  echo $A\ndone')
    assert [c.argv for c in walk.commands] == [
        ["sam", "build", "-t", "modules/a/t.yaml"],
        ["echo", "x"],
        ["sam", "build", "-t", "modules/b/t.yaml"],
        ["echo", "x"],
    ]
    assert walk.commands[1].built == "modules/a/t.yaml" and walk.commands[1].in_loop


@pytest.mark.parametrize("command", _of(NEEDS_AWS) + _of(SAM_BUILD), ids=lambda c: c.id)
def test_what_a_command_needs_exists_without_aws(command):
    check_offline(command)


@pytest.mark.parametrize(
    ("section", "block"),
    [
        (s, b)
        for s, b in BLOCKS
        if any(classify(c.argv) == RUNS_OFFLINE for c in COMMANDS if c.section == s)
    ],
    ids=lambda v: v if "\n" not in v else "",
)
def test_a_block_s_offline_commands_run_in_order(section, block, tmp_path):
    ran: list[str] = []

    def run(command: Command) -> str:
        argv = command.argv
        kind = classify(argv)
        if kind == NEEDS_AWS:
            check_offline(command)
            for value in argv:  # what it hands AWS exists at that point of the block
                if value.startswith("file://"):
                    assert (tmp_path / value.removeprefix("file://")).is_file(), command.id
            return _placeholder(command)
        if kind != RUNS_OFFLINE:
            return _placeholder(command)
        if argv[0] == "sam":
            if not os.environ.get("RELAY_SAM"):
                return ""  # no SAM CLI: checked in the flags test only
            argv = [os.environ["RELAY_SAM"], *argv[1:]]
        if argv[0] == "make":
            argv = ["make", "-n", *argv[1:]]
        result = subprocess.run(
            argv,
            cwd=ROOT if argv[0] in {"make"} or "validate" in argv else tmp_path,
            capture_output=True,
            text=True,
            env=_offline_env(),
            timeout=120,
        )
        assert result.returncode == 0, (command.id, result.stderr[-2000:])
        ran.append(command.id)
        for flag in ("-out",):  # openssl writes where it is told
            if flag in argv:
                assert (tmp_path / argv[argv.index(flag) + 1]).is_file(), command.id
        if argv[:2] == ["shred", "-u"]:
            assert not any((tmp_path / a).exists() for a in argv[2:]), command.id
        return result.stdout

    Walk(section, run).block(block)
    assert ran, section


def test_the_new_stage_block_makes_a_key_pair_and_keeps_only_the_public_half(tmp_path):
    section, block = next((s, b) for s, b in BLOCKS if s == "A new stage")
    handed: dict[str, str] = {}

    def run(command: Command) -> str:
        if command.argv[0] in {"openssl", "shred", "cat"}:
            out = subprocess.run(command.argv, cwd=tmp_path, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            return out.stdout
        if command.argv[:3] == ["aws", "cloudformation", "deploy"]:
            handed.update(
                dict(o.split("=", 1) for o in options(command.argv, 3)[0]["--parameter-overrides"])
            )
        return _placeholder(command)

    Walk(section, run).block(block)
    assert handed["IdentityPublicKey"].startswith("-----BEGIN PUBLIC KEY-----"), handed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.pub.pem"]


REQUIRED_SECTIONS = {
    "how a module team ships alone": ["One module alone"],
    "what runs in which order": ["Layout and deploy order", "Canary releases"],
    "how a rollback happens and what the team sees": [
        "How a rollback happens",
        "What the module team sees",
    ],
}


def _sections(doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    heading = ""
    for line in doc.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            out[heading] = ""
        elif heading:
            out[heading] += line + "\n"
    return out


def test_the_doc_says_how_a_team_ships_alone_in_which_order_and_how_it_rolls_back():
    sections = _sections(DOC.read_text())
    for requirement, headings in REQUIRED_SECTIONS.items():
        for heading in headings:
            assert len(sections.get(heading, "").split()) > 30, (requirement, heading)
    # One module alone deploys that module's template to its own stack and nothing else
    alone = [c for c in COMMANDS if c.section == "One module alone"]
    assert [c.argv[:2] for c in alone] == [["sam", "build"], ["sam", "deploy"]]


def _deployment_preferences() -> dict[str, dict[str, Any]]:
    out = {}
    for path in UNIT_TEMPLATE.values():
        for name, resource in template(path)["Resources"].items():
            preference = resource.get("Properties", {}).get("DeploymentPreference")
            if preference:
                out[name] = preference
    return out


def test_the_canary_table_and_the_hooks_are_the_templates():
    sections = _sections(DOC.read_text())
    table: dict[str, str] = {}
    for row in sections["Canary releases"].splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            for name in re.findall(r"`(\w+)`", cells[0]):
                table[name] = cells[1].strip("`")
    preferences = _deployment_preferences()
    assert table == {name: p["Type"] for name, p in preferences.items()}
    for name, preference in preferences.items():
        for hook in preference.get("Hooks", {}).values():
            hook_id = hook["Ref"] if isinstance(hook, dict) else hook
            function_name = next(
                sub_text(template(path)["Resources"][hook_id]["Properties"]["FunctionName"])
                for path in UNIT_TEMPLATE.values()
                if hook_id in template(path)["Resources"]
            )
            assert re.fullmatch(
                r"CodeDeployHook_relay-\$\{Stage\}-[a-z]+-(PreTraffic|PostTraffic)", function_name
            ), (name, function_name)
        if preference["Type"] == "AllAtOnce":
            # an HTTP module's canary alias: smoked before it serves, judged by the release
            # controller afterwards (no alarm watches an all-at-once shift)
            assert set(preference["Hooks"]) == {"PreTraffic"}, name
            assert not preference.get("Alarms"), name
        else:
            assert preference.get("Alarms"), f"{name} is judged by no alarm"


# --- the real builds (make test-build) --------------------------------------------------

BUILDS = {
    " ".join(c.argv): c
    for c in _of(SAM_BUILD)
    if not c.in_loop and options(c.argv, 2)[0]["--template-file"][0].startswith("modules/")
}


@pytest.mark.skipif(
    os.environ.get("RELAY_TEST_BUILD") != "1", reason="real builds: make test-build"
)
@pytest.mark.parametrize("command", list(BUILDS.values()), ids=list(BUILDS))
def test_a_documented_module_build_builds(command, tmp_path):
    sam = os.environ.get("RELAY_SAM", str(ROOT / ".relay/tools/sam/bin/sam"))
    flags, _ = options(command.argv, 2)
    config = _config_section(flags, "build")
    # the doc builds in source through samconfig.toml, as the Makefile's targets need
    assert config.get("build_in_source") is True, config
    build_dir = tmp_path / "build"
    argv = [
        sam,
        *command.argv[1:],
        "--build-dir",
        str(build_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {
        **_offline_env(),
        "LAMBDA_PIP": "true",  # the test venv's packages stand in for the wheels
        "BUILD_PYTHON": sys.executable,
        "BUILD_TOOLS": "",
    }
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
    built = yaml_parse((build_dir / "template.yaml").read_text())
    source = template(flags["--template-file"][0])
    functions = [
        n for n, r in source["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    ]
    assert functions
    for name in functions:
        handler = source["Resources"][name]["Properties"]["Handler"]
        module = handler.rsplit(".", 1)[0].replace(".", "/") + ".py"
        assert (build_dir / name / module).is_file(), (name, module)
        assert built["Resources"][name]["Properties"]["CodeUri"] == name
