"""`edgeml report`."""

from __future__ import annotations

from pathlib import Path

import click

from edgeml.errors import EdgemlError, first_line


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True,
              help="Markdown, one self-contained HTML file with plots, or the run record as is.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Write to this file  [default: stdout; html: RUN_DIR/report.html]")
@click.option("--merge", type=click.Path(path_type=Path), metavar="FILE",
              help="A device_report.json from `edgeml profile`: adds the latency measured on the device.")
def report(run_dir, fmt, out, merge):
    """Render the report of RUN_DIR, the OUT folder of `edgeml optimize`, from its report.json."""
    import json

    from edgeml.report.load import load_device_report, load_run, merge_device_report
    from edgeml.report.markdown import render_markdown

    run, text = load_run(run_dir)
    if run.get("config", {}).get("kind") == "language-model":
        text = _language_model(run, text, fmt, merge)
    else:
        if merge is not None:
            run = merge_device_report(run, load_device_report(merge))
            text = json.dumps(run, indent=2) + "\n"
        if fmt == "html":
            from edgeml.report.html import render_html

            text, out = render_html(run), out or run_dir / "report.html"
        elif fmt == "md":
            text = render_markdown(run)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as e:
        raise EdgemlError(f"cannot write {out}: {e.strerror or first_line(e)}") from e
    click.echo(str(out))


def _language_model(run: dict, text: str, fmt: str, merge: Path | None) -> str:
    if merge is not None or fmt == "html":
        raise EdgemlError("the report of a language model is md or json (--merge and html are for other models)")
    if fmt == "json":
        return text
    from edgeml.report.language_model import render_language_model

    return render_language_model(run)
