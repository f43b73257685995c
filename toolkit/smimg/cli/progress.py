"""Rendering long work: BuildKit's plain progress as a live step view, push progress per layer, push results, a
watched cloud job's status line."""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from rich.markup import escape

from smimg import ship
from smimg.cli import console
from smimg.cli.console import err

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.status import Status

    from smimg.ship import LayerEvent

_STEP = re.compile(r"^#(\d+) (\[[^\]]+\] .*)$")
_STATE = re.compile(r"^#(\d+) (DONE [0-9.]+s|CACHED|ERROR.*)$")
_OUTPUT = re.compile(r"^#(\d+) [0-9.]+ (.*)$")


_View = TypeVar("_View", bound="_StatusView")


class _StatusView:
    """A status line at the bottom of a terminal while the view is open (none elsewhere: CI, a pipe)."""

    def __init__(self, live: bool, first: str) -> None:
        self.live = live
        self.status: Status | None = err.status(first) if live else None

    def __enter__(self: _View) -> _View:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.status is not None:
            self.status.stop()


class BuildView(_StatusView):
    """Feed it lines; on a terminal it shows each step once, with its state, and the step running now."""

    def __init__(self, live: bool) -> None:
        super().__init__(live, "starting build")
        self.steps: dict[str, str] = {}

    def __call__(self, line: str) -> None:
        if not self.live:
            err.print(line, markup=False, highlight=False)
            return
        assert self.status is not None
        # BuildKit's text is full of brackets ("[2/9] RUN ...", "[/bin/sh -c ...]"): never read as markup.
        if match := _STEP.match(line):
            self.steps[match[1]] = match[2]
            self.status.update(escape(match[2][:100]))
        elif match := _STATE.match(line):
            step = self.steps.get(match[1])
            if step and not step.startswith("[internal]"):
                state = match[2]
                mark = "[red]✗[/]" if state.startswith("ERROR") else "[green]✓[/]"
                err.print(f"{mark} {escape(step[:100])} [dim]{escape(state.lower())}[/]", highlight=False)
        elif match := _OUTPUT.match(line):
            step = self.steps.get(match[1], "")
            self.status.update(f"{escape(step[:60])} [dim]{escape(match[2][:60])}[/]")
        elif not line.startswith("#"):
            err.print(line, markup=False, highlight=False)


class PushView:
    """Per-layer progress: a bar per uploading layer on a terminal, one line per finished layer elsewhere."""

    def __init__(self, live: bool) -> None:
        # Imported here: loading rich's progress bars cost every command start-up 8 ms.
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = (
            Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True)
            if live
            else None
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> PushView:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        (self.progress.console if self.progress else err).print(text, markup=False, highlight=False)

    def layer(self, event: LayerEvent) -> None:
        done = event.status in {"Pushed", "Layer already exists"} or event.status.startswith("Mounted from")
        if self.progress is None:
            if done:
                err.print(f"  layer {event.layer}: {event.status.lower()}", markup=False, highlight=False)
            return
        task = self.tasks.get(event.layer)
        if task is None:
            task = self.tasks[event.layer] = self.progress.add_task(f"layer {event.layer}", total=None)
        if event.total:
            self.progress.update(task, completed=event.current, total=event.total)
        if done:
            self.progress.update(task, description=f"layer {event.layer} [dim]{event.status.lower()}[/]")
            self.progress.stop_task(task)


class JobView(_StatusView):
    """A cloud job being watched: its lines as they come; on a terminal, a status line under them with the job's
    secondary status, how long it has been in it and since the job was created."""

    def __init__(self, live: bool) -> None:
        super().__init__(live, "waiting for the job")

    def line(self, text: str) -> None:
        err.print(text, markup=False, highlight=False)

    def progress(self, job: Mapping[str, Any]) -> None:
        from smimg.cloud import watch  # loaded by the watch already

        if self.status is not None:
            self.status.update(escape(watch.summary(job, datetime.datetime.now(datetime.timezone.utc))))


def push_with_view(
    plan: ship.PushPlan, *, username: str | None, password_stdin: bool, update_repository: bool, json: bool
) -> None:
    """Execute and render a push (shared by `smimg push` and `smimg build --push`)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with PushView(console.interactive()) as view:
        result = ship.push(
            plan,
            username=username,
            password=password,
            update_repository=update_repository,
            on_event=view.layer,
            on_line=view.line,
        )
    if json:
        console.print_json(result.as_dict())
        return
    if result.skipped:
        console.err.print(f"[green]already pushed[/] {result.refs[0]}")
    else:
        console.err.print(
            f"[green]pushed[/] {', '.join(result.refs)}: {result.layers_pushed} layers uploaded "
            f"({result.bytes_pushed / 1e6:.1f} MB), {result.layers_existing} already there, {result.seconds:.1f}s"
        )
    snippets = result.snippets()
    console.err.print("\n[bold]SageMaker Python SDK v2[/]")
    console.err.print(snippets["sdk_v2"], markup=False)
    console.err.print("[bold]SageMaker Python SDK v3[/]")
    console.err.print(snippets["sdk_v3"], markup=False)
    console.out.print(result.uri)
