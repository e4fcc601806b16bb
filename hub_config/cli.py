"""The ``afhub`` command: ``up``, ``check`` and ``render``.

Exit codes: 0 success, 1 runtime failure, 2 invalid values or usage. Problems are printed one
per line as ``key.path: message``; no command prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import apply
from . import values as values_mod


def _print_problems(err: values_mod.ValuesError, prefix: str = "") -> None:
    for p in err.problems:
        print(f"{prefix}{p}", file=sys.stderr)


def cmd_check(args) -> int:
    bad = 0
    many = len(args.files) > 1
    for path in args.files:
        try:
            apply.build(values_mod.load_file(path), data_dir=".")
        except values_mod.ValuesError as e:
            bad += 1
            _print_problems(e, f"{path}: " if many else "")
            continue
        if many or args.verbose:
            print(f"{path}: ok")
    return 2 if bad else 0


def cmd_render(args) -> int:
    try:
        plan = apply.build(values_mod.load_file(args.file), data_dir=args.data_dir)
    except values_mod.ValuesError as e:
        _print_problems(e)
        return 2
    sys.stdout.write(apply.render_plan(plan))
    return 0


def cmd_up(args) -> int:
    from .runner import run_up

    return run_up(args.file, args.ip, args.port, os.path.abspath(args.data_dir))


def cmd_docs(args) -> int:
    from .docs import render_values_doc

    text = render_values_doc()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="afhub", description="Run and check an afhub analysis facility."
    )
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the facility on this machine (embedded default without -f)")
    up.add_argument("-f", "--file", help="values file (default: the embedded local example)")
    up.add_argument(
        "--ip", default=None, help="address of the public proxy (default: hub.ip, 127.0.0.1)"
    )
    up.add_argument(
        "--port", type=int, default=None, help="port of the public proxy (default: hub.port, 8000)"
    )
    up.add_argument(
        "--data-dir",
        default=".afhub",
        help="state directory: database, keys, logs (default: ./.afhub)",
    )
    up.set_defaults(func=cmd_up)

    check = sub.add_parser("check", help="validate values files; exit 2 listing every problem")
    check.add_argument("files", nargs="+", metavar="VALUES")
    check.add_argument("-v", "--verbose", action="store_true", help="print 'ok' for valid files")
    check.set_defaults(func=cmd_check)

    render = sub.add_parser("render", help="print the effective JupyterHub config, secrets masked")
    render.add_argument("file", metavar="VALUES")
    render.add_argument("--data-dir", default=".afhub", help="data dir the config would use")
    render.set_defaults(func=cmd_render)

    docs = sub.add_parser(
        "docs", help="write the values reference (docs/values.md) from the schema"
    )
    docs.add_argument("-o", "--output", default="-")
    docs.set_defaults(func=cmd_docs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
