"""Commands for versions: init, import, commit, log, show, checkout, status, diff, registry, tag, branch."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..core.names import parse_version
from .common import JSON_OPT, STATE, out, parse_pairs, short
from .output import human_bytes, human_int, to_jsonable

if TYPE_CHECKING:
    from ..versions.history import VersionInfo
    from ..versions.materialize import WorkStatus


def register(app: typer.Typer) -> None:
    for fn in (init, import_, commit, log, show, checkout, status, diff, registry, tag, branch):
        name = fn.__name__.rstrip("_")
        app.command(name=name)(fn)


# ------------------------------------------------------------------------------ init


def init(
    path: Path | None = typer.Argument(None, help="Folder to create .lineage/ in (default: here)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Create an empty store (.lineage/) here, at PATH, or at --store."""
    from ..api import Repo
    o = out(json_out)
    store = STATE.store or ((path or Path.cwd()) / ".lineage")
    repo = Repo.init(store)
    STATE.repo_obj = repo
    STATE.mutated = True
    if json_out:
        o.json({"store": str(repo.path), "work_dir": str(repo.work_dir())})
        return
    o.line(f"Initialized empty lineage store in {repo.path}")
    o.info(f"Next: lin import MODEL_DIR --name base   (work folder: {repo.work_dir()})")


# ------------------------------------------------------------------------------ import, commit


def _print_commit(o, res, verb: str) -> None:
    tail = f"parent {', '.join(res.parent_names)}" if res.parent_names else "root version"
    o.line(f"{verb} {res.name}  {short(res.id)}  ({tail})")
    o.line(f"  {res.files} files, {res.tensors} tensors, {human_bytes(res.bytes)}; "
           f"{human_bytes(res.new_bytes)} new in the store"
           + (f"; {res.cached_files} unchanged files not re-read" if res.cached_files else ""))
    b = res.after.get("backup")
    if b is not None and b.ok:
        o.line(f"  backed up to {b.remote}: {b.objects_sent} objects, {human_bytes(b.bytes_sent)} sent")
    elif b is not None:
        from ..core.publish import failure_text
        o.warn(f"{failure_text('backup', b)}; the commit is safe here. `lin backup` retries (so does the next commit)")


def import_(
    folder: Path = typer.Argument(..., help="A model folder (as written by save_pretrained)."),
    name: str = typer.Option(..., "--name", "-n", help="Descriptive name; the version becomes vNNN_NAME."),
    message: str = typer.Option("", "--message", "-m", help="What this model is."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files to leave out (repeatable)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Store a model folder as a new root version.

    A root version has no parent; the first version of a store becomes v001_NAME.
    """
    o = out(json_out)
    repo = STATE.repo()
    res = repo.import_model(folder, name, message=message, progress=o.progress(), exclude=tuple(exclude))
    if json_out:
        o.json(res)
        return
    _print_commit(o, res, "Imported")
    o.line(f"Active version: {res.name}")


def commit(
    folder: Path = typer.Argument(..., help="The model folder to store."),
    name: str = typer.Option(..., "--name", "-n", help="Descriptive name; the version becomes vNNN_NAME."),
    message: str = typer.Option("", "--message", "-m"),
    parent: str | None = typer.Option(None, "--parent", help="Parent version (default: the active version, HEAD)."),
    data: list[Path] = typer.Option([], "--data", help="A data file this version was trained on (repeatable)."),
    metric: list[str] = typer.Option([], "--metric", help="KEY=VALUE (repeatable)."),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE (repeatable)."),
    code: Path | None = typer.Option(None, "--code", help="The training code's git repository (default: here)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of files to leave out (repeatable)."),
    allow_empty: bool = typer.Option(False, "--allow-empty",
                                     help="Make the version even if its files are exactly its parent's."),
    json_out: bool = JSON_OPT,
) -> None:
    """Store a model folder as a new version of the active one.

    Its parent is the active version (or --parent), and it becomes the active version. A folder
    whose files are exactly its parent's makes no version unless --allow-empty.
    """
    o = out(json_out)
    repo = STATE.repo()
    metrics = parse_pairs(metric, "metric")
    params = parse_pairs(param, "param")
    parents = [repo.resolve(parent)] if parent else None
    datasets: list[str] = []
    warnings: list[str] = []
    if data:
        from ..data import datasets_for_commit  # the data registry
        base = parents[0] if parents else repo.head()
        datasets, warnings = datasets_for_commit(repo, list(data), base=base, progress=o.progress())
    for w in warnings:
        o.warn(w)
    res = repo.commit_folder(folder, name, message=message, parents=parents, datasets=datasets,
                             metrics=metrics, params=params, code_path=code, exclude=tuple(exclude),
                             progress=o.progress(), allow_empty=allow_empty)
    if json_out:
        o.json({**res.__dict__, "warnings": warnings})
        return
    _print_commit(o, res, "Committed")
    for d in datasets:
        from ..versions.history import dataset_summary
        s = dataset_summary(repo, d)
        o.line(f"  data: {s['file']}  fingerprint {short(s['hash'])}  {human_int(s.get('examples'))} examples")
    o.line(f"Active version: {res.name}")


# ------------------------------------------------------------------------------ log


_KEY_METRICS = ("final_loss", "loss", "eval_loss", "tokens_trained", "steps", "tokens_per_s", "wall_time_s")


def _fmt_metrics(m: dict, limit: int = 6) -> str:
    """The most telling metrics first (loss, tokens, steps), then the rest in their order."""
    ordered = [k for k in _KEY_METRICS if k in m] + [k for k in m if k not in _KEY_METRICS]
    items = []
    for k, v in [(k, m[k]) for k in ordered if not isinstance(m[k], (list, dict))][:limit]:
        if isinstance(v, float):  # a loss keeps its decimals (10.00, not 10)
            items.append(f"{k}={v:#.4g}" if "loss" in k else f"{k}={v:.4g}")
        elif isinstance(v, (int, str, bool)):
            items.append(f"{k}={v}")
    return " ".join(items)


def _decorations(v) -> str:
    decs = ["name removed"] if v.name_removed else []
    if v.active:
        decs.append("HEAD" + (f" -> {v.branches[0]}" if v.branches else ""))
        decs.extend(v.branches[1:])
    else:
        decs.extend(v.branches)
    return f"  [{', '.join(decs)}]" if decs else ""


def _eval_line(ev: dict | None) -> str | None:
    """A version's eval loss on the store's evaluation set, from its notes (lin eval)."""
    if not ev or ev.get("eval_loss") is None:
        return None
    return f"loss {ev['eval_loss']:.4f} on {ev['set']} ({ev['method']}, {ev['by']})"


def _evals(repo) -> dict[str, dict]:
    from ..analytics.collect import eval_summaries
    return eval_summaries(repo)


def _version_block(o, v, indent: str = "", evals: dict | None = None) -> None:
    o.line(f"{indent}{v.name}  {short(v.id)}  {v.created}{_decorations(v)}", style="bold" if v.active else None)
    pad = indent + "    "
    o.line(f"{pad}parent   {', '.join(v.parent_names) if v.parent_names else '(root: ' + v.kind + ')'}")
    for d in v.datasets:
        tok = f", {human_int(d.get('tokens'))} tokens" if d.get("tokens") is not None else ""
        if d.get("part"):  # a run that stopped early trained only some records of the file
            tok += f", part: {human_int(d['part']['records'])} of {human_int(d['part']['of'])} records"
        o.line(f"{pad}data     {d.get('file')} ({short(d.get('hash'))}{tok})")
    if v.metrics:
        o.line(f"{pad}metrics  {_fmt_metrics(v.metrics)}")
    if (ev := _eval_line((evals or {}).get(v.id))) is not None:
        o.line(f"{pad}eval     {ev}")
    if v.code and v.code.get("commit"):
        dirty = " (dirty)" if v.code.get("dirty") else ""
        o.line(f"{pad}code     {v.code.get('path')} @ {short(v.code.get('commit'), 12)}{dirty}")
    if v.message:
        o.line(f"{pad}message  {v.message.splitlines()[0]}")


def graph_lines(versions: list[VersionInfo]) -> list[tuple[str, VersionInfo]]:
    """Draw versions as a tree (first parent = tree parent), roots and children oldest first.

    An only child is drawn under its parent in the same column, so a long lineage (thousands of
    versions trained file after file) stays a straight line; where a version has several
    children each gets a branch (``├─`` / ``└─``) and its descendants are drawn inside it.
    Iterative: the depth of a lineage is not limited by Python's recursion limit.
    """
    by_id = {v.id: v for v in versions}
    children: dict[str | None, list[VersionInfo]] = {}
    for v in versions:
        parent = v.parents[0] if v.parents and v.parents[0] in by_id else None
        children.setdefault(parent, []).append(v)

    def order(v):
        p = parse_version(v.name)
        return (p[0] if p else 10**9, v.name)

    for lst in children.values():
        lst.sort(key=order)
    lines: list[tuple[str, VersionInfo]] = []
    # (version, prefix of its column, connector drawn before it)
    stack = [(r, "", "") for r in reversed(children.get(None, []))]
    while stack:
        v, prefix, connector = stack.pop()
        lines.append((prefix + connector, v))
        kids = children.get(v.id, [])
        column = prefix + {"": "", "├─": "│ ", "└─": "  "}[connector]
        if len(kids) == 1:
            stack.append((kids[0], column, ""))
        else:
            for i in reversed(range(len(kids))):
                stack.append((kids[i], column, "└─" if i == len(kids) - 1 else "├─"))
    return lines


def log(
    rev: str | None = typer.Argument(None, help="Start from this version (default: HEAD)."),
    all_: bool = typer.Option(False, "--all", help="Every version, not only the lineage of REV."),
    graph: bool = typer.Option(False, "--graph", help="Draw all versions as a tree."),
    json_out: bool = JSON_OPT,
) -> None:
    """The lineage of the active version (or REV) back to its root."""
    o = out(json_out)
    repo = STATE.repo()
    versions = repo.log(rev, all_versions=all_ or graph)
    # whether each version is on the backup remote (None: no backup remote)
    backed = None
    if repo.settings.backup.remote:
        from ..remote.backup import backed_up
        backed = backed_up(repo)
    mark = (lambda v: "" if backed is None else ("" if backed.get(v.id) else "  (not backed up)"))
    evals = _evals(repo)
    if json_out:
        o.json([{**v.to_dict(), "backed_up": None if backed is None else bool(backed.get(v.id)),
                 "eval": evals.get(v.id)} for v in versions])
        return
    if not versions:
        o.line("No versions yet. Import a model: lin import DIR --name NAME")
        return
    if graph:
        for prefix, v in graph_lines(versions):
            data = ", ".join(d.get("file") or "?" for d in v.datasets)
            extra = f"  + {data}" if data else ""
            metrics = _fmt_metrics(v.metrics, 3)
            o.line(f"{prefix}* {v.name}  {short(v.id, 8)}{_decorations(v)}{extra}"
                   + (f"  ({metrics})" if metrics else "") + mark(v), style="bold" if v.active else None)
        return
    for v in versions:
        _version_block(o, v, evals=evals)
        if backed is not None:
            o.line(f"    backup   {'yes (' + repo.settings.backup.remote + ')' if backed.get(v.id) else 'not yet (lin backup)'}")
        o.line()
    if not all_:
        from ..versions.history import off_branch
        side = off_branch(repo)
        if side:
            shown = ", ".join(side[:8]) + (f" and {len(side) - 8} more" if len(side) > 8 else "")
            o.line(f"Versions on no branch ({len(side)}): {shown}. See them with `lin log --all --graph`.")


# ------------------------------------------------------------------------------ show


def show(rev: str = typer.Argument("HEAD"), json_out: bool = JSON_OPT) -> None:
    """Everything a version records, its files and tensors.

    Lineage, data, metrics, params, code, environment, files, tensors.
    """
    o = out(json_out)
    repo = STATE.repo()
    info = repo.show(rev)
    evals = _evals(repo)
    if json_out:
        o.json({**to_jsonable(info), "eval": evals.get(info.version.id)})
        return
    v = info.version
    _version_block(o, v, evals=evals)
    pad = "    "
    o.line(f"{pad}id       {v.id}")
    o.line(f"{pad}author   {v.author}")
    if v.params:
        o.line(f"{pad}params   {_fmt_metrics(v.params, 50)}")
    if v.env:
        o.line(f"{pad}env      " + " ".join(f"{k}={val}" for k, val in v.env.items() if k != "platform"))
    o.line(f"{pad}tree     {info.tree}")
    o.line(f"{pad}files:")
    for f in info.files:
        t = f"  ({f['tensors']} tensors)" if "tensors" in f else ""
        o.line(f"{pad}  {f['path']:<40} {human_bytes(f['size']):>10}  {short(f['id'])}{t}")
    ts = info.tensors
    if ts["count"]:
        dt = ", ".join(f"{k} x{n}" for k, n in ts["dtypes"].items())
        o.line(f"{pad}tensors  {ts['count']} tensors, {human_bytes(ts['bytes'])}  ({dt})")


# ------------------------------------------------------------------------------ checkout, status


def checkout(
    rev: str = typer.Argument(..., help="Version, branch, tag or id prefix."),
    to: Path | None = typer.Option(None, "--to", help="Folder to write into (default: the work folder)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite files that changed since checkout."),
    activate: bool = typer.Option(True, "--activate/--keep-active",
                                  help="Make REV the active version (default), or only write its files "
                                       "(an export; HEAD stays where it is)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Write a version into the work folder and make it active.

    REV is written byte-identical into the work folder (or --to DIR) and becomes the active
    version (--keep-active: only its files are written, an export).
    """
    o = out(json_out)
    repo = STATE.repo()
    res = repo.checkout(rev, to=to, force=force, progress=o.progress(), activate=activate)
    if json_out:
        o.json(res)
        return
    o.line(f"Checked out {res.name}  {short(res.id)} into {res.target}")
    shared = f", {human_bytes(res.bytes_shared)} of it sharing the store's blocks" if res.bytes_shared else ""
    o.line(f"  {res.written} files written ({human_bytes(res.bytes_written)}{shared}), {res.unchanged} unchanged"
           + (f", {res.removed} removed" if res.removed else ""))
    if res.active:
        o.line(f"Active version: {res.name}")
    else:
        o.line(f"Active version unchanged: {repo.name_of(repo.head()) or '-'}")


def status(
    to: Path | None = typer.Option(None, "--to", help="Folder to compare (default: the work folder)."),
    json_out: bool = JSON_OPT,
) -> None:
    """The active version, and what the work folder holds.

    Whether the work folder (or --to DIR) matches the active version and which files and
    tensors changed, or which version it still holds when HEAD moved on; and the backup state.
    """
    o = out(json_out)
    repo = STATE.repo()
    st = repo.status(to)
    extra = {}
    try:
        from ..remote.backup import backup_status
        extra = backup_status(repo)
    except ImportError:
        pass
    from ..guard.drop import local_summary
    summary = local_summary(repo)
    local = None
    if summary.dropped_objects or repo.settings.core.local_versions:
        # held once: dropped weights (only on the remote), and versions not yet backed up (only here)
        local = {**asdict(summary), "local_versions": repo.settings.core.local_versions,
                 "versions_only_here": (extra.get("total", 0) - extra.get("backed_up", 0)) if extra.get("url") else None}
    if json_out:
        o.json({**st.__dict__, "work": st.work, **({"backup": extra} if extra else {}),
                **({"local": local} if local else {})})
        return
    if st.head is None:
        o.line("No active version: the store is empty. Import a model: lin import DIR --name NAME")
        return
    where = f"on branch {st.branch}" if st.branch else "detached (no branch)"
    o.line(f"Active version: {st.name}  {short(st.head)}  {where}")
    w = st.work
    if w is None or not w.exists:
        o.line(f"Work folder {w.target if w else repo.work_dir()}: not checked out (lin checkout {st.name})")
    elif w.holds is not None and w.clean:
        update = f"lin checkout {st.branch or st.name}" + (f" --to {w.target}" if to is not None else "")
        o.line(f"Work folder {w.target}: at {w.holds_name or short(w.holds)} (HEAD is {st.name}); "
               f"`{update}` to update")
    elif w.clean:
        o.line(f"Work folder {w.target}: matches {st.name}")
    else:
        since = st.name if w.holds is None else f"{w.holds_name or short(w.holds)} (HEAD is {st.name})"
        o.line(f"Work folder {w.target}: {len(w.changes)} change(s) since {since}")
        for c in w.changes:
            o.line(f"  {c.change:<9} {c.path}")
            for t in c.tensors[:20]:
                o.line(f"      tensor {t}")
            if len(c.tensors) > 20:
                o.line(f"      ... and {len(c.tensors) - 20} more tensors")
    if w is not None and w.shares is not None:
        o.line(_sharing_line(w))
    if extra:
        o.line(f"Backup: {extra.get('summary', '')}")
    if local:
        where = f" ({', '.join(local['remotes'])})" if local["remotes"] else ""
        only_here = local["versions_only_here"]
        o.line(f"Local store (core.local_versions = {local['local_versions']}): {local['dropped_objects']} weight "
               f"objects ({human_bytes(local['dropped_bytes'])}) on the remote only{where}, held once there; "
               + ("every version is also on the backup remote" if only_here == 0 else
                  f"{only_here} version(s) held only here, not yet backed up" if only_here else
                  "no backup remote: everything is held only here"))


def _sharing_line(w: WorkStatus) -> str:
    """Whether the work folder shares blocks with the store or holds a copy (lin status)."""
    if not w.shares:
        return f"Work folder copies: each checkout writes a full copy ({w.sharing})"
    if w.shared_bytes is None or not w.exists:
        return f"Work folder shares blocks with the store ({w.sharing}): a checkout costs no second copy"
    line = (f"Work folder shares blocks with the store ({w.sharing}): {human_bytes(w.shared_bytes)} "
            f"of its {human_bytes(w.stored_bytes)} cost no second copy")
    if w.shared_bytes < w.stored_bytes // 2:
        line += " (the rest are copies: written by another tool, or from objects stored before the store shared)"
    return line


# ------------------------------------------------------------------------------ diff, registry


def diff(
    rev_a: str = typer.Argument(...),
    rev_b: str = typer.Argument(...),
    no_stats: bool = typer.Option(False, "--no-stats", help="Skip the per-tensor norms (faster)."),
    json_out: bool = JSON_OPT,
) -> None:
    """What changed between two versions, per file and per tensor.

    Added / removed / changed, with the size of each tensor's change.
    """
    o = out(json_out)
    repo = STATE.repo()
    res = repo.diff(rev_a, rev_b, stats=not no_stats)
    if json_out:
        o.json(res)
        return
    o.line(f"diff {res.a_name} ({short(res.a)}) -> {res.b_name} ({short(res.b)})")
    if not res.files:
        o.line("  no differences")
    for f in res.files:
        o.line(f"  {f.change:<8} {f.path}")
        for t in f.tensors:
            shape = "x".join(str(x) for x in (t.shape or []))
            stats = ""
            if t.rel_l2 is not None:
                stats = f"  rel L2 {t.rel_l2:.3e}  max |d| {t.max_abs:.3e}"
            o.line(f"      {t.change:<8} {t.name}  {t.dtype}[{shape}]{stats}")
    o.line(f"  unchanged: {res.unchanged_files} files, {res.unchanged_tensors} tensors in changed-or-same files")


def registry(json_out: bool = typer.Option(True, "--json/--table", help="JSON (default) or a table.")) -> None:
    """Every version in the shape of a registry.json.

    Name, parent, training_data, created, metrics, active.
    """
    o = out(json_out)
    repo = STATE.repo()
    reg = repo.registry()
    evals = _evals(repo)
    for r in reg.values():
        ev = evals.get(r["id"])
        r["eval_loss"] = ev.get("eval_loss") if ev else None
    if json_out:
        o.json(reg)
        return
    for name, r in reg.items():
        act = "  (active)" if r["active"] else ""
        loss = f"  eval loss {r['eval_loss']:.4f}" if r["eval_loss"] is not None else ""
        o.line(f"{name:<30} parent {r['parent'] or '-':<30} {r['created']}{loss}{act}")


# ------------------------------------------------------------------------------ tag, branch


def tag(
    name: str | None = typer.Argument(None, help="New tag name (omit to list tags)."),
    rev: str = typer.Argument("HEAD"),
    json_out: bool = JSON_OPT,
) -> None:
    """List names, or add an immutable extra name for a version."""
    o = out(json_out)
    repo = STATE.repo()
    if name is None:
        tags = repo.tags()
        if json_out:
            o.json(tags)
            return
        for n, cid in tags.items():
            o.line(f"{n:<40} {short(cid)}  {repo.name_of(cid) or ''}")
        return
    cid = repo.tag(name, rev).id
    if json_out:
        o.json({"tag": name, "id": cid})
        return
    o.line(f"Tagged {repo.name_of(cid)} ({short(cid)}) as {name}")


def branch(
    name: str | None = typer.Argument(None, help="New branch name (omit to list branches)."),
    rev: str = typer.Argument("HEAD"),
    switch: bool = typer.Option(False, "--switch", "-s", help="Make the new branch the active line (HEAD)."),
    json_out: bool = JSON_OPT,
) -> None:
    """List branches, or start a new line of training at REV."""
    o = out(json_out)
    repo = STATE.repo()
    if name is None:
        cur = repo.head_branch()
        br = repo.branches()
        if json_out:
            o.json({"current": cur[len('refs/heads/'):] if cur else None, "branches": br})
            return
        for n, cid in br.items():
            mark = "*" if cur == f"refs/heads/{n}" else " "
            o.line(f"{mark} {n:<30} {short(cid)}  {repo.name_of(cid) or ''}")
        return
    cid = repo.branch(name, rev, switch=switch).id
    if json_out:
        o.json({"branch": name, "id": cid})
        return
    o.line(f"Branch {name} at {repo.name_of(cid)} ({short(cid)})" + ("; now active" if switch else ""))
