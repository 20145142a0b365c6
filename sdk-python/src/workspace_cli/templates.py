"""``workspace template ...``: list, inspect, import, build (from a Containerfile, its log
streamed), remove, and bootstrap a Debian base."""

from __future__ import annotations

import pathlib
import sys
from typing import Annotated

import typer

from workspace_cli.app import JsonOption, client, parse_pairs, template_app, verb
from workspace_cli.output import print_fields, print_json, print_table


@verb(template_app.command("ls"))
def list_templates(json_output: JsonOption = False) -> None:
    """List templates."""
    with client() as api:
        templates = api.template.list()
    if json_output:
        print_json(templates)
        return
    print_table(["NAME", "DESCRIPTION"], ([t.name, t.description or ""] for t in templates), "no templates")


@verb(template_app.command("inspect"))
def inspect_template(
    name: Annotated[str, typer.Argument(help="name[:tag]", show_default=False)], json_output: JsonOption = False
) -> None:
    """Show one template (digest, layers, size, the image's defaults)."""
    with client() as api:
        template = api.template.get(name)
    if json_output:
        print_json(template)
        return
    from workspace_cli.output import human_bytes

    print_fields(
        [
            ("name", template.name),
            ("description", template.description or "-"),
            ("source", template.source or "built-in"),
            ("digest", template.digest or "-"),
            ("layers", str(len(template.layers))),
            ("size", human_bytes(template.size) if template.size else "-"),
            ("created", template.created_at or "-"),
            ("env", " ".join(f"{k}={v}" for k, v in template.env.items()) or "-"),
            ("working dir", template.working_dir or "-"),
            ("user", template.user or "-"),
        ]
    )


@verb(template_app.command("import"))
def import_template(
    name: Annotated[str, typer.Argument(help="name[:tag] to create", show_default=False)],
    archive: Annotated[str, typer.Argument(help="docker/podman save or OCI archive, or OCI layout dir")],
    replace: Annotated[bool, typer.Option(help="Replace a template of that name")] = False,
    description: Annotated[str, typer.Option(help="Shown by template ls")] = "",
    json_output: JsonOption = False,
) -> None:
    """Import an image archive as a template, streamed (a progress bar on a terminal)."""
    from workspace_cli.transfer import upload_progress

    with client() as api, upload_progress(archive, enabled=not json_output) as source:
        template = api.template.import_image(name, source, replace=replace, description=description)
    if json_output:
        print_json(template)
    else:
        sys.stdout.write(template.name + "\n")


@verb(template_app.command("rm"))
def remove_template(
    name: Annotated[str, typer.Argument(help="name[:tag]", show_default=False)], json_output: JsonOption = False
) -> None:
    """Delete an image template (refused while sandboxes use it)."""
    with client() as api:
        api.template.delete(name)
    if json_output:
        print_json({"removed": name})


@verb(template_app.command("bootstrap"))
def bootstrap_template(
    suite: Annotated[str, typer.Argument(help="debian:SUITE, e.g. debian:bookworm", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="Template name [the argument]")] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", help="Debian mirror [this machine's apt mirror]")] = None,
    variant: Annotated[str, typer.Option("--variant", help="mmdebstrap variant")] = "minbase",
    replace: Annotated[bool, typer.Option("--replace", help="Replace a template of that name")] = False,
    json_output: JsonOption = False,
) -> None:
    """Build a minimal Debian base with mmdebstrap (on this machine) and import it."""
    from workspace_cli import bootstrap

    distribution, _, release = suite.partition(":")
    if distribution != "debian" or not release:
        raise typer.BadParameter("give debian:SUITE, e.g. debian:bookworm", param_hint="SUITE")
    chosen_mirror = mirror or bootstrap.host_mirror()
    with bootstrap.scratch_dir() as work:
        try:
            archive = bootstrap.bootstrap_archive(release, pathlib.Path(work), chosen_mirror, variant)
        except RuntimeError as exc:
            raise typer.BadParameter(str(exc)) from None
        with client() as api:
            template = api.template.import_image(
                name or suite,
                archive,
                replace=replace,
                description=f"mmdebstrap {variant} {release} from {chosen_mirror}",
            )
    if json_output:
        print_json(template)
    else:
        sys.stdout.write(f"{template.name} {template.digest} ({template.size} bytes)\n")


@verb(template_app.command("build"))
def build_template(
    context: Annotated[str, typer.Argument(help="The build context directory")] = ".",
    tag: Annotated[str, typer.Option("--tag", "-t", help="The template to make: name[:tag]", show_default=False)] = "",
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="The Containerfile [CONTEXT/Containerfile or Dockerfile]")
    ] = None,
    build_arg: Annotated[list[str] | None, typer.Option("--build-arg", help="KEY=VALUE for an ARG")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for RUN steps only (a proxy), not in the image")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="The build's time limit in seconds")] = 3600,
    network: Annotated[bool, typer.Option("--network", help="Step sandboxes get network (filtered)")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a template of that name")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no build log")] = False,
    json_output: JsonOption = False,
) -> None:
    """Build a template from a Containerfile; the build log streams to stderr as it runs."""
    if not tag:
        raise typer.BadParameter("give the template to make with -t name[:tag]", param_hint="--tag")

    def show(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    with client() as api:
        template = api.template.build(
            tag,
            containerfile=pathlib.Path(file) if file else None,
            context=context,
            build_args=parse_pairs(build_arg, "--build-arg"),
            env=parse_pairs(env, "--env"),
            on_log=None if quiet or json_output else show,
            timeout=timeout,
            network=network,
            replace=replace,
        )
    if json_output:
        print_json(template)
    else:
        sys.stdout.write(f"{template.name} {template.digest}\n")
