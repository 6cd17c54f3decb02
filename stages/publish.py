"""``aipc publish`` and ``aipc verify``: push bundles to the Hub; check a published one byte for byte.

Not DVC stages: publishing is a side effect outside the workspace (CI runs it from scripts/release.sh).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("publish")
@click.argument("bundles", nargs=-1, type=click.Path(path_type=Path))
@click.option("--all", "all_", is_flag=True, help="Every bundle params.yaml defines (artifacts/bundles/*).")
@click.option("--dry-run", is_flag=True, help="Print the plan (files to add/change/keep/delete, bytes); write nothing.")
@click.option("--private/--public", "private", default=None,
              help="Visibility of repos this creates (default: publish.private).")
@click.option("--tag", default=None, metavar="VERSION", help="Version tag for each commit (default: publish.tag).")
@click.pass_obj
def command(obj, bundles: tuple[Path, ...], all_: bool, dry_run: bool, private: bool | None, tag: str | None) -> None:
    """Publish BUNDLES (folders under artifacts/bundles/) to Hub repos named by publish.repo_template.

    Only files whose content differs from the repo are uploaded, in one commit per bundle naming the
    source commit. The token comes from HF_TOKEN or `hf auth login`. Bundles with a failed validation
    or files that don't match their manifest.json are refused.
    """
    import re

    from aipc.pipeline import publish
    from aipc.pipeline.errors import ConfigError

    if tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", tag):
        raise ConfigError(f"--tag {tag!r} is not a valid version tag", fix="use e.g. v1.2.0 (letters, digits, . _ + -)")
    if all_ and bundles:
        raise ConfigError("pass bundle folders or --all, not both", fix="drop --all, or drop the folders")
    folders = publish.bundles_for_all(obj.params) if all_ else list(bundles)
    if not folders:
        raise ConfigError("nothing to publish", fix="name bundle folders (artifacts/bundles/...) or pass --all")
    publish.publish(obj.params, folders, dry_run=dry_run, private=private, tag=tag, echo=click.echo)


@click.command("verify")
@click.argument("repo_id")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@click.option("--public-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The publisher's public key (PEM): the signature must be by its private half "
                   "(default: the key the bundle ships, which proves integrity, not who signed).")
def verify(repo_id: str, revision: str | None, public_key: Path | None) -> None:
    """Download REPO_ID into a fresh temporary cache; check its signature (model.sig) and every file's
    sha256 against its manifest.json."""
    from aipc.pipeline import publish

    publish.verify(repo_id, revision, echo=click.echo, public_key=public_key)
