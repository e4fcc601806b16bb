"""The ``afhub`` command: ``up``, ``check`` and ``render``.

Exit codes: 0 success, 1 runtime failure, 2 invalid values or usage. Problems are printed one
per line as ``key.path: message``; no command prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from . import apply
from . import values as values_mod
from .targets import TARGETS


def _print_problems(err: values_mod.ValuesError, prefix: str = "") -> None:
    for p in err.problems:
        print(f"{prefix}{p}", file=sys.stderr)


def summary(values: dict) -> str:
    """``backend kubernetes, auth cilogon, 3 images, 5 profiles`` for a valid values file."""
    auth = values.get("auth")
    parts = [
        f"backend {values.get('backend', {}).get('type', 'local')}",
        f"auth {auth.get('provider', 'generic')}" if auth else "no auth section",
        f"{len(values.get('images') or [])} images",
        f"{len(values.get('profiles') or [])} profiles",
    ]
    return ", ".join(parts)


def check_values(values: dict, target: str | None, data_dir: str = ".") -> list:
    """Every problem with ``values`` for ``target``: schema, cross-key and target, in one list."""
    from .targets import target_problems

    extra = () if target is None else (lambda v: target_problems(v, target),)
    problems = values_mod.validate(values, extra_checks=extra)
    if problems:
        return problems
    if target == "z2jh":
        from .z2jh import chart_problems, chart_values

        return chart_problems(chart_values(values))
    apply.build(values, data_dir=data_dir, deployment=target or "standalone")
    return []


def file_problems(path: str, target: str | None, data_dir: str = ".") -> tuple[dict | None, list]:
    """(values, every problem) of a values file; the loader's problems (duplicate keys, control
    characters...) come together with the schema and cross-key problems of the rest."""
    try:
        values = values_mod.load_file(path)
    except values_mod.ValuesError as e:
        return None, values_mod.all_problems(e, lambda v: check_values(v, target, data_dir))
    try:
        return values, check_values(values, target, data_dir)
    except values_mod.ValuesError as e:
        return values, e.problems


def cmd_check(args) -> int:
    bad = 0
    many = len(args.files) > 1
    for path in args.files:
        chosen = args.target or _default_target(path)  # Slurm/HTCondor: standalone checks
        values, problems = file_problems(path, chosen)
        found = values_mod.warnings(values) if values is not None else []
        if args.chart_values and values is not None:
            found, problems = _chart_profile_findings(values, args.chart_values, found, problems)
        if not problems and chosen is None:
            found = found + _likely_target_findings(values)
        for w in found:
            print(f"{path + ': ' if many else ''}warning: {w}", file=sys.stderr)
        if problems:
            bad += 1
            _print_problems(values_mod.ValuesError(problems), f"{path}: " if many else "")
            continue
        target = f"; fits {chosen}" if chosen else ""
        warned = f"; {len(found)} warning{'s' if len(found) != 1 else ''}" if found else ""
        print(f"{path}: ok ({summary(values)}{target}{warned})")
    return 2 if bad else 0


def _default_target(path: str) -> str | None:
    """``targets.default_target`` of a file (None when it does not load: its problems are
    reported by the check itself)."""
    from .targets import default_target

    try:
        return default_target(values_mod.load_file(path))
    except values_mod.ValuesError:
        return None


def _likely_target_findings(values: dict) -> list:
    """Without --target, a kubernetes facility is most likely bound for the chart: what
    ``afhub z2jh`` would refuse is said now, as warnings naming the option that checks it."""
    from .targets import target_problems

    if (values.get("backend") or {}).get("type") != "kubernetes":
        return []
    return [
        values_mod.Problem(
            p.path, f"{p.message} [afhub z2jh refuses this; check with --target z2jh]"
        )
        for p in target_problems(values, "z2jh")
    ]


def _chart_profile_findings(values, chart_path, found, problems):
    """``check --chart-values``: who serves profiles, and the chart profileList's own findings."""
    from .z2jh import profile_list_findings

    try:
        notes, more = profile_list_findings(values, values_mod.load_file(chart_path))
    except values_mod.ValuesError as e:
        return found, list(problems) + [
            values_mod.Problem(f"{chart_path}: {p.path}", p.message) for p in e.problems
        ]
    return found + notes, sorted(set(problems) | set(more))


def cmd_render(args) -> int:
    data_dir = args.data_dir or ("/srv/jupyterhub" if args.target == "z2jh" else ".afhub")
    values, problems = file_problems(args.file, args.target, data_dir)
    try:
        if problems:
            raise values_mod.ValuesError(problems)
        plan = apply.build(values, data_dir=data_dir, deployment=args.target or "standalone")
    except values_mod.ValuesError as e:
        _print_problems(e)
        return 2
    if args.job:
        return _render_job(values, args.job, args.option or [])
    if args.target == "z2jh":
        sys.stdout.write(
            "# What afhub sets inside the Zero to JupyterHub hub pod (hub.extraConfig calls\n"
            '# configure(..., deployment="z2jh")); the chart values come from `afhub z2jh`.\n'
        )
    sys.stdout.write(apply.render_plan(plan))
    return 0


def _render_job(values: dict, profile: str, options: list[str]) -> int:
    """``render --job PROFILE [--option NAME=CHOICE ...]``: that start's job script."""
    from .job_preview import job_script

    user_options = {"profile": profile}
    for item in options:
        name, sep, choice = item.partition("=")
        if not sep:
            print(f"--option: write NAME=CHOICE, got {item!r}", file=sys.stderr)
            return 2
        user_options[name] = choice
    try:
        script = job_script(values, user_options)
    except values_mod.ValuesError as e:
        _print_problems(e)
        return 2
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    return 0


def _block_str(dumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (hub.extraConfig code) as readable ``|`` blocks."""


_BlockDumper.add_representer(str, _block_str)


def cmd_z2jh(args) -> int:
    from .z2jh import validated_chart_values

    try:
        values = values_mod.load_file(args.file)
        out = validated_chart_values(values, hub_image=args.hub_image)
        if args.chart_values:
            out = _with_chart_values(values, out, args.chart_values)
    except values_mod.ValuesError as e:
        _print_problems(e)
        return 2
    sys.stdout.write("# Zero to JupyterHub chart values generated by `afhub z2jh`\n")
    sys.stdout.write(
        f"# kubectl create configmap afhub-values --from-file=values.yaml={args.file}\n"
    )
    sys.stdout.write(yaml.dump(out, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True))
    return 0


def cmd_dask_chart(args) -> int:
    from .dask_chart import chart_values, refusals
    from .z2jh import chart_problems

    try:
        values = values_mod.load(args.file)
        refused = refusals(values)
        if refused:
            raise values_mod.ValuesError(refused, args.file)
        out = chart_values(values)
        problems = chart_problems(out, "dask-gateway")
        if problems:
            raise values_mod.ValuesError(problems, args.file)
    except values_mod.ValuesError as e:
        _print_problems(e)
        return 2
    sys.stdout.write("# dask-gateway chart values generated by `afhub dask-chart`\n")
    sys.stdout.write(yaml.dump(out, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True))
    return 0


def _with_chart_values(values: dict, generated: dict, path: str) -> dict:
    """The operator's chart values (``--chart-values``) with afhub's merged in, validated."""
    from .z2jh import chart_problems, merge_chart_values, profile_list_findings

    existing = values_mod.load_file(path)  # the same safe loader as values files
    merged = merge_chart_values(existing, generated)
    notes, problems = profile_list_findings(values, merged)
    problems += chart_problems(merged)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if problems:
        raise values_mod.ValuesError(problems)
    return merged


def cmd_up(args) -> int:
    from .runner import run_up

    if args.file and (args.ip is not None or args.port is not None):
        from .addresses import up_override_problems

        try:
            problems = up_override_problems(values_mod.load_file(args.file), args.ip, args.port)
        except values_mod.ValuesError:
            problems = []  # run_up reports the file's own problems
        if problems:
            _print_problems(values_mod.ValuesError(problems))
            return 2
    return run_up(args.file, args.ip, args.port, os.path.abspath(args.data_dir))


def cmd_data_fileset(args) -> int:
    from .fileset import place_on_origin

    try:
        path = place_on_origin(
            args.file, os.path.abspath(args.data_dir), events=args.events, per_file=args.per_file
        )
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"the AGC ttbar fileset is on the origin at {path} (manifest {path}/fileset.json)")
    return 0


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
        "--ip",
        default=None,
        help="address of the public proxy (default: hub.ip, 127.0.0.1; refused when it "
        "would change hub.ip of a file for more than one host)",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="port of the public proxy (default: hub.port, 8000; refused likewise)",
    )
    up.add_argument(
        "--data-dir",
        default=".afhub",
        help="state directory: database, keys, logs (default: ./.afhub)",
    )
    up.set_defaults(func=cmd_up)

    check = sub.add_parser("check", help="validate values files; exit 2 listing every problem")
    check.add_argument("files", nargs="+", metavar="VALUES")
    check.add_argument(
        "-t",
        "--target",
        choices=TARGETS,
        help="also check what this deployment needs (z2jh: callback_url, chart-owned keys, the "
        "chart's schema; standalone: afhub up / jupyterhub -f)",
    )
    check.add_argument(
        "--chart-values",
        metavar="CONFIG",
        help="Zero to JupyterHub chart values: say whether their singleuser.profileList or the "
        "values file's profiles are served, and check the list",
    )
    check.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    check.set_defaults(func=cmd_check)

    render = sub.add_parser("render", help="print the effective JupyterHub config, secrets masked")
    render.add_argument("file", metavar="VALUES")
    render.add_argument(
        "--data-dir",
        default=None,
        help="data dir the config would use (default: ./.afhub; /srv/jupyterhub for z2jh)",
    )
    render.add_argument(
        "-t",
        "--target",
        choices=TARGETS,
        help="render for this deployment (z2jh: what configure() sets inside the chart's hub)",
    )
    render.add_argument(
        "--job",
        metavar="PROFILE",
        help="print the job script (Slurm #SBATCH lines, HTCondor submit description) a start "
        "of this profile slug submits, for a user in every group the file names",
    )
    render.add_argument(
        "--option",
        action="append",
        metavar="NAME=CHOICE",
        help="with --job: a profile option's choice (repeatable), e.g. --option gpus=2",
    )
    render.set_defaults(func=cmd_render)

    z2jh = sub.add_parser(
        "z2jh", help="print Zero to JupyterHub chart values for a kubernetes values file"
    )
    z2jh.add_argument("file", metavar="VALUES")
    z2jh.add_argument(
        "--chart-values",
        metavar="CONFIG",
        help="the chart values (config.yaml) the hub runs with now: printed back with afhub's "
        "keys merged in, singleuser.profileList kept in place",
    )
    z2jh.add_argument(
        "--hub-image",
        metavar="IMAGE",
        help="the hub image with afhub (images/hub/Dockerfile, `make images IMAGES=hub`), set "
        "as hub.image, e.g. registry.example.org/afhub-hub:0.1.0",
    )
    z2jh.set_defaults(func=cmd_z2jh)

    dask_chart = sub.add_parser(
        "dask-chart", help="print dask-gateway chart values for the values file's dask section"
    )
    dask_chart.add_argument("file", metavar="VALUES")
    dask_chart.set_defaults(func=cmd_dask_chart)

    data = sub.add_parser("data", help="data on the embedded storage of `afhub up`")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fileset = data_sub.add_parser(
        "fileset",
        help="write the AGC ttbar fileset (the shipped 200-event NanoAOD sample replicated into "
        "files) onto the embedded XRootD origin, under data.sample_path/agc-ttbar; files already "
        "there are kept",
    )
    fileset.add_argument("-f", "--file", help="values file (default: the embedded local example)")
    fileset.add_argument(
        "--data-dir", default=".afhub", help="afhub up's state directory (default: ./.afhub)"
    )
    fileset.add_argument(
        "--events", type=int, default=1_000_000, help="events in all (default: 1000000)"
    )
    fileset.add_argument(
        "--per-file", type=int, default=100_000, help="events per file (default: 100000)"
    )
    fileset.set_defaults(func=cmd_data_fileset)

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
