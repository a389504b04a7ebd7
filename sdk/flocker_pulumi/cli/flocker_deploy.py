"""``flocker-deploy DEPLOYMENT APPLICATION``: Flocker's command, on the Pulumi engine.

Both files are read first: a mistake in them is reported (exit 2) before any state is
created or any node is contacted. The stack then lives in local file state, so
re-running with an edited deployment.yml compares against the last run and moves
what changed, as Flocker did.

    flocker-deploy deployment.yml application.yml            # deploy, or move what changed
    flocker-deploy --preview deployment.yml application.yml  # show what would change; change nothing
    flocker-deploy --destroy                                 # remove everything of the stack

Exit status: 0 done, 1 the engine failed, 2 bad command line or configuration file.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
import pulumi.automation as auto

from flocker_provider.nodes import DEFAULT_TEMPLATE, NODES_FILE_ENV, TEMPLATE_ENV, TLS_DIR_ENV

from ..component import FlockerDeployment, load_files
from ..flocker_config import ConfigError, Configuration

PROJECT = "flocker-deploy"
STACK_ENV = "FLOCKER_DEPLOY_STACK"
STATE_ENV = "FLOCKER_DEPLOY_STATE"
DEFAULT_STACK = "flocker"
DEFAULT_STATE_DIR = "~/.flocker-deploy/state"
# In the state directory: the passphrase of the stacks' secrets, when the user gives none.
PASSPHRASE_FILE = "passphrase"
PASSPHRASE_ENV = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
# The stack output the "what runs where" table is read from.
OUTPUT = "applications"
# The FlockerDeployment the program declares; its children keep the URNs they had at the
# stack's root before there was one (its aliases).
COMPONENT = "flocker-deploy"

EXIT_ENGINE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flocker-deploy",
        description="Deploy the applications of APPLICATION (application.yml, Flocker or Fig format) to the nodes "
        "DEPLOYMENT (deployment.yml) names; re-run after editing DEPLOYMENT to move applications with their data.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--preview", action="store_true", help="show what would change, and change nothing")
    action.add_argument("--destroy", action="store_true", help="remove every container and volume of the stack (files not needed)")
    parser.add_argument(
        "--stack", default=os.environ.get(STACK_ENV) or DEFAULT_STACK, help=f"stack name (default: {DEFAULT_STACK}, env {STACK_ENV})"
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR,
        help=f"local Pulumi state directory (default: {DEFAULT_STATE_DIR}, env {STATE_ENV})",
    )
    parser.add_argument("--nodes-file", default=os.environ.get(NODES_FILE_ENV), help=f"node file, nodes.json (env {NODES_FILE_ENV})")
    parser.add_argument(
        "--docker-host-template",
        default=os.environ.get(TEMPLATE_ENV) or DEFAULT_TEMPLATE,
        help=f"how to reach a node given by address (default: {DEFAULT_TEMPLATE}, env {TEMPLATE_ENV})",
    )
    parser.add_argument(
        "--tls-dir", default=os.environ.get(TLS_DIR_ENV), help=f"ca.pem, cert.pem, key.pem for tcp:// nodes (env {TLS_DIR_ENV})"
    )
    parser.add_argument("--transfer-image", default=None, help="image with rsync used to move volumes between nodes")
    parser.add_argument("deployment", nargs="?", metavar="DEPLOYMENT", help="deployment.yml: which application runs on which node")
    parser.add_argument("application", nargs="?", metavar="APPLICATION", help="application.yml: what the applications are")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.destroy and (args.deployment is None or args.application is None):
        parser.error("DEPLOYMENT and APPLICATION are required (except with --destroy)")
    # The provider runs in another process and directory: relative paths would point elsewhere.
    for name in ("state_dir", "nodes_file", "tls_dir"):
        value = getattr(args, name)
        if value:
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    return args


def stack_config(args: argparse.Namespace) -> dict[str, str | None]:
    """The ``flocker:*`` keys resources.py reads; None means "not set"."""
    return {
        "flocker:nodesFile": args.nodes_file,
        "flocker:dockerHostTemplate": args.docker_host_template,
        "flocker:tlsDir": args.tls_dir,
        "flocker:transferImage": args.transfer_image,
    }


def prepare_environment(args: argparse.Namespace) -> None:
    # Inline programs lose the language host's runtime options: the dynamic provider
    # host must be told which Python (this venv) to run, and find the venv's helpers.
    os.environ["PULUMI_PYTHON_CMD"] = sys.executable
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    os.environ.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
    # resources.py lets these environment variables win over stack config; the defaults of
    # the options already came from them, so writing the resolved values back makes an
    # explicit option win over an inherited variable.
    for variable, value in ((NODES_FILE_ENV, args.nodes_file), (TEMPLATE_ENV, args.docker_host_template), (TLS_DIR_ENV, args.tls_dir)):
        if value:
            os.environ[variable] = value
        else:
            os.environ.pop(variable, None)


def make_program(configuration: Configuration | None) -> Callable[[], None]:
    def program() -> None:
        applications = FlockerDeployment(COMPONENT, configuration=configuration).applications if configuration is not None else {}
        pulumi.export(OUTPUT, applications)

    return program


def passphrase_env(state_dir: str, work_dir: str, stack: str) -> dict[str, str]:
    """How the engine gets the passphrase that encrypts the stack's secrets in its state: the
    user's own (PULUMI_CONFIG_PASSPHRASE or _FILE, when set), else one made once at random
    and kept, 0600, beside the state it opens; said where when it is made. A stack made
    before, with the empty passphrase of old, keeps it (another would not open it), said so."""
    for variable in PASSPHRASE_ENV:
        if variable in os.environ:
            return {variable: os.environ[variable]}
    path = os.path.join(state_dir, PASSPHRASE_FILE)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(work_dir, f"Pulumi.{stack}.yaml")):
            print(
                f"flocker-deploy: stack {stack} was made with an empty passphrase, which anyone can use to read its secrets: "
                f"`pulumi stack change-secrets-provider passphrase` (in {work_dir}) gives it one",
                file=sys.stderr,
                flush=True,
            )
            return {"PULUMI_CONFIG_PASSPHRASE": ""}
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32))
        print(
            f"flocker-deploy: the stack's secrets are encrypted with a passphrase made now in {path} (mode 0600): "
            "keep it with the state, which cannot be decrypted without it; PULUMI_CONFIG_PASSPHRASE(_FILE) gives your own",
            file=sys.stderr,
            flush=True,
        )
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": path}


def open_stack(args: argparse.Namespace, configuration: Configuration | None) -> auto.Stack:
    os.makedirs(args.state_dir, exist_ok=True)
    # A fixed work directory keeps each stack's settings (the passphrase salt among them)
    # from one run to the next, instead of a fresh temporary directory per run.
    work_dir = os.path.join(args.state_dir, "workspace")
    os.makedirs(work_dir, exist_ok=True)
    backend = f"file://{args.state_dir}"
    options = auto.LocalWorkspaceOptions(
        work_dir=work_dir,
        project_settings=auto.ProjectSettings(name=PROJECT, runtime="python", backend=auto.ProjectBackend(url=backend)),
        env_vars={"PULUMI_BACKEND_URL": backend, **passphrase_env(args.state_dir, work_dir, args.stack)},
    )
    stack = auto.create_or_select_stack(args.stack, project_name=PROJECT, program=make_program(configuration), opts=options)
    settings = stack_config(args)
    stack.set_all_config({key: auto.ConfigValue(value) for key, value in settings.items() if value is not None})
    unset = [key for key, value in settings.items() if value is None and key in stack.get_all_config()]
    if unset:
        stack.remove_all_config(unset)
    return stack


def _print_line(line: str) -> None:
    print(line, flush=True)


def _print_error_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def where_table(outputs: dict[str, Any], configuration: Configuration) -> str:
    """What runs where, from the stack outputs; applications on no node are listed too."""
    rows = [("APPLICATION", "NODE", "ADDRESSES")]
    for item in configuration.applications:
        name = item.application.name
        placed = outputs.get(name)
        if placed is None:
            rows.append((name, "-", "not running"))
        else:
            rows.append((name, str(placed.get("node") or "-"), ", ".join(placed.get("addresses") or []) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip() for row in rows]
    return "\n".join(["what runs where:", *lines])


def engine_message(error: auto.errors.CommandError) -> str:
    """What to say about a failed engine command.

    Its stdout (with the diagnostics) was streamed already: repeat only its stderr, or
    point back at the output when there is none.
    """
    text = str(error)
    head, found, stderr = text.partition("\n stderr: ")
    if found and stderr.strip():
        return stderr.strip()
    code = re.search(r"code: (-?\d+)", head)
    return f"the Pulumi engine failed (exit code {code.group(1) if code else '?'}); its diagnostics are above"


def run(args: argparse.Namespace, configuration: Configuration | None) -> int:
    stack = open_stack(args, configuration)
    color = "always" if sys.stdout.isatty() else "never"
    streams: dict[str, Any] = {"on_output": _print_line, "on_error": _print_error_line, "color": color}
    if args.destroy:
        stack.destroy(**streams)
        print(f"stack {args.stack}: destroyed", flush=True)
        return 0
    if args.preview:
        result = stack.preview(diff=True, refresh=True, **streams)
        changes = {op: count for op, count in result.change_summary.items() if op != "same" and count}
        summary = ", ".join(f"{count} to {op}" for op, count in sorted(changes.items())) or "no changes"
        print(f"preview: {summary}; nothing was changed", flush=True)
        return 0
    # Refreshed first, as `refresh: always` does for projects: an application that stopped
    # since the last run (a node restarted) starts again, as Flocker's deploy did.
    result = stack.up(refresh=True, **streams)
    outputs = result.outputs[OUTPUT].value if OUTPUT in result.outputs else {}
    assert configuration is not None  # only --destroy runs without files
    print(where_table(outputs, configuration), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configuration = None
    if args.deployment is not None and args.application is not None:
        try:
            # Link order problems too: reported before any state exists.
            configuration = load_files(args.deployment, args.application)
        except ConfigError as exc:
            print(exc.message, file=sys.stderr)
            return EXIT_USAGE
    prepare_environment(args)
    try:
        return run(args, configuration)
    except auto.errors.CommandError as exc:
        print(f"flocker-deploy: {type(exc).__name__}: {engine_message(exc)}", file=sys.stderr)
    except (auto.errors.InvalidVersionError, OSError) as exc:
        print(f"flocker-deploy: cannot run the Pulumi engine: {exc}", file=sys.stderr)
    return EXIT_ENGINE


if __name__ == "__main__":
    sys.exit(main())
