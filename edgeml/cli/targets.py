"""`edgeml targets`."""

from __future__ import annotations

import click
from rich.table import Table

from edgeml.cli.common import table_console


@click.command()
def targets():
    """List targets, their candidates, and whether each can run here (on this CPU's features, which
    $EDGEML_CPU_FEATURES overrides)."""
    from rich.markup import escape

    from edgeml.doctor import STATUS_COLOURS, candidate_status
    from edgeml.measure import cpu_features
    from edgeml.profiles import default_profile
    from edgeml.targets import TARGETS

    console = table_console()
    cpu = cpu_features.describe()
    features = "unknown" if cpu["features"] is None else ", ".join(cpu["features"]) or "none"
    console.print(escape(f"CPU features: {features} ({cpu['features_from']}); "
                         f"INT8 scheme: {cpu['int8_scheme']['name']}"))
    for target in TARGETS.values():
        profile = default_profile(target.name)
        title = f"{target.name}: {target.description}" + (f" (default profile: {profile})" if profile else "")
        table = Table("candidate", "backend", "precision", "quantizer", "status here", title=title,
                      title_justify="left")
        for c in target.candidates:
            here = candidate_status(target, c)
            status = f"[{STATUS_COLOURS[here['status']]}]{here['status']}[/]: {escape(here['detail'])}"
            table.add_row(c.name, c.backend.name, c.precision, c.quantizer or "", status)
        console.print(table)
        if target.language_models:
            console.print(_language_models(target))



def _language_models(target) -> Table:
    """The target's builds of causal language models, and whether this machine builds and times each."""
    from rich.markup import escape

    from edgeml.doctor import STATUS_COLOURS, language_model_runtime, language_model_status

    table = Table("language-model build", "runtime", "weights", "status here", title=f"{target.name}: language models",
                  title_justify="left")
    for c in target.language_models:
        here = language_model_status(c)
        table.add_row(c.name, language_model_runtime(c), c.precision,
                      f"[{STATUS_COLOURS[here['status']]}]{here['status']}[/]: {escape(here['detail'])}")
    return table
