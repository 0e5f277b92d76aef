"""Human output of `charger-console`: the documents of the console protocol as rich tables and lines.

What it is for: turning the controller's replies (EVSE state documents of API.md §4, `why`, `log`,
`meter`, `service`, reservations) into what a technician reads, and the live `watch` view. Colour and
styles come from `rich`, which emits them only on a terminal (and never with `--no-color`); no ANSI
codes are written by hand.

What it must never do: talk to the socket, decide anything, or show a token unmasked (the controller
masks tokens in its documents; this module prints them as given).

Standard: API.md §4 (field names and units), the console protocol (issue 12).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "STATUS_STYLE",
    "WatchView",
    "as_dict",
    "as_list",
    "evse_table",
    "log_lines",
    "meter_view",
    "reservations_table",
    "service_view",
    "status_header",
    "why_lines",
]

DASH = "—"

STATUS_STYLE: dict[str, str] = {
    "Available": "green",
    "Preparing": "cyan",
    "Charging": "bold green",
    "SuspendedEV": "yellow",
    "SuspendedEVSE": "yellow",
    "Finishing": "cyan",
    "Reserved": "magenta",
    "Unavailable": "dim",
    "Faulted": "bold red",
}


def as_dict(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _num(value: object, unit: str = "", digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DASH
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return f"{text}{unit}"


def _energy(wh: object) -> str:
    if isinstance(wh, bool) or not isinstance(wh, int | float):
        return DASH
    return f"{wh / 1000:.2f} kWh" if wh >= 1000 else f"{wh:.0f} Wh"


def measured_a(sample: Mapping[str, object] | None) -> str:
    """The largest phase current of a meter sample (API.md §4 `current_A`), or a dash."""
    if not sample:
        return DASH
    currents = [c for c in as_list(sample.get("current_A")) if isinstance(c, int | float) and not isinstance(c, bool)]
    return _num(max(currents)) if currents else DASH


def _session(doc: Mapping[str, object]) -> str:
    session = as_dict(doc.get("session"))
    if not session:
        return DASH
    token = session.get("id_token")
    return str(token) if token else "(no token yet)"


def _reservation(doc: Mapping[str, object]) -> str:
    reservation = as_dict(doc.get("reservation"))
    if not reservation:
        return DASH
    expiry = str(reservation.get("expiry_time") or "")
    return f"#{reservation.get('reservation_id')} until {expiry}" if expiry else f"#{reservation.get('reservation_id')}"


def evse_table(evses: Iterable[Mapping[str, object]], samples: Mapping[int, Mapping[str, object]] | None = None,
               *, title: str | None = None) -> Table:
    """The EVSE table of `status` and `watch`: one row per EVSE state document (API.md §4)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (("EVSE", "right"), ("status", "left"), ("CP", "center"), ("PP (A)", "right"),
                          ("relay", "left"), ("offered A", "right"), ("measured A", "right"), ("energy", "right"),
                          ("session", "left"), ("reservation", "left"), ("errors", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich's JustifyMethod literal
    for doc in evses:
        evse_id = doc.get("evse_id")
        status = str(doc.get("status", "?"))
        if doc.get("enabled") is False and status != "Unavailable":
            status += " (disabled)"
        sample = (samples or {}).get(evse_id) if isinstance(evse_id, int) else None
        errors = [str(e) for e in as_list(doc.get("errors"))]
        session = as_dict(doc.get("session"))
        table.add_row(
            str(evse_id),
            Text(status, style=STATUS_STYLE.get(str(doc.get("status")), "")),
            str(doc.get("cp", DASH)),
            _num(doc.get("pp_max_a")),
            Text("closed", style="bold") if doc.get("relay_closed") else Text("open"),
            _num(doc.get("offered_a")),
            measured_a(sample),
            _energy(session.get("energy_wh")) if session else DASH,
            _session(doc),
            _reservation(doc),
            Text(", ".join(errors), style="red") if errors else Text(DASH),
        )
    return table


def status_header(status: Mapping[str, object]) -> Text:
    """One line from the `R/status` document: firmware version and whether the backend link is up."""
    online = status.get("online")
    text = Text()
    if status.get("firmware"):
        text.append(f"charger-firmware {status.get('firmware')}  ")
    text.append("backend ")
    text.append("online" if online else "offline", style="green" if online else "yellow")
    return text


def why_lines(evse_id: object, result: Mapping[str, object]) -> list[Text]:
    """`why`: one line per blocking condition, "code  message"; a single sentence when nothing blocks."""
    blockers = [as_dict(b) for b in as_list(result.get("blocked_by"))]
    if not blockers:
        return [Text(f"EVSE {evse_id} can charge", style="green")]
    width = max(len(str(b.get("code", ""))) for b in blockers)
    lines = []
    for blocker in blockers:
        line = Text()
        line.append(str(blocker.get("code", "")).ljust(width), style="bold yellow")
        line.append("  ")
        line.append(str(blocker.get("message", "")))
        lines.append(line)
    return lines


def log_lines(result: Mapping[str, object]) -> list[Text]:
    return [Text(str(line)) for line in as_list(result.get("transitions"))]


def reservations_table(reservations: Sequence[object]) -> Table:
    table = Table(header_style="bold")
    for name in ("id", "sender", "token", "EVSE", "state", "start", "expiry", "group token"):
        table.add_column(name)
    for item in reservations:
        r = as_dict(item)
        table.add_row(str(r.get("reservation_id")), str(r.get("sender") or DASH), str(r.get("id_token", DASH)),
                      str(r.get("evse_id") if r.get("evse_id") is not None else "any"), str(r.get("state", DASH)),
                      str(r.get("start_time") or DASH), str(r.get("expiry_time", DASH)),
                      str(r.get("parent_id_token") or DASH))
    return table


def meter_view(result: Mapping[str, object]) -> RenderableType:
    """`meter`: the meter's identity, its decoded sample and the raw register blocks."""
    head = Text()
    head.append(f"EVSE {result.get('evse_id')}  meter {result.get('model')}")
    if result.get("url"):
        head.append(f"  {result.get('url')}  device {result.get('device_id')}")
    parts: list[RenderableType] = [head]
    sample = as_dict(result.get("sample"))
    if sample:
        values = Table(show_header=False, box=None, padding=(0, 2))
        values.add_column(style="bold")
        values.add_column(justify="right")
        values.add_row("energy import", _num(sample.get("energy_Wh_import"), " Wh", 3))
        values.add_row("energy export", _num(sample.get("energy_Wh_export"), " Wh", 3))
        values.add_row("power", _num(sample.get("power_W"), " W"))
        values.add_row("current", " / ".join(_num(c, " A", 2) for c in as_list(sample.get("current_A"))) or DASH)
        values.add_row("voltage", " / ".join(_num(v, " V") for v in as_list(sample.get("voltage_V"))) or DASH)
        values.add_row("frequency", _num(sample.get("frequency_Hz"), " Hz", 2))
        values.add_row("meter ok", str(sample.get("meter_ok")))
        values.add_row("timestamp", str(sample.get("timestamp", DASH)))
        parts.append(values)
    else:
        parts.append(Text("no sample yet", style="yellow"))
    blocks = [as_dict(b) for b in as_list(result.get("blocks"))]
    if blocks:
        raw = Table(title="raw registers", title_justify="left", header_style="bold")
        raw.add_column("fc", justify="right")
        raw.add_column("address", justify="right")
        raw.add_column("words")
        for block in blocks:
            address = block.get("address")
            raw.add_row(str(block.get("fc")), f"0x{address:04X}" if isinstance(address, int) else str(address),
                        " ".join(f"{w:04X}" if isinstance(w, int) else str(w) for w in as_list(block.get("words"))))
        parts.append(raw)
    return Group(*parts)


def service_view(result: Mapping[str, object]) -> RenderableType:
    passed = result.get("passed") is True
    lines: list[RenderableType] = [Text(f"  {step}") for step in as_list(result.get("steps"))]
    verdict = Text(f"{result.get('test')} test ")
    verdict.append("passed" if passed else "FAILED", style="bold green" if passed else "bold red")
    return Group(*lines, verdict)


class WatchView:
    """The state behind the live `watch` table: the last document of each EVSE, meter samples, status."""

    def __init__(self, status: Mapping[str, object], evses: Iterable[Mapping[str, object]],
                 *, transitions_shown: int = 6) -> None:
        self.status: dict[str, object] = dict(status)
        self.evses: dict[int, dict[str, object]] = {}
        for doc in evses:
            evse_id = doc.get("evse_id")
            if isinstance(evse_id, int):
                self.evses[evse_id] = dict(doc)
        self.samples: dict[int, dict[str, object]] = {}
        self.transitions: deque[str] = deque(maxlen=transitions_shown)
        self.changes = 0

    def apply(self, event: Mapping[str, object]) -> None:
        """One line of the watch stream (console spec: `event`, `topic`, `doc` or `line`)."""
        kind = event.get("event")
        doc = as_dict(event.get("doc"))
        evse_id = doc.get("evse_id")
        if kind == "state" and isinstance(evse_id, int):
            known = self.evses.get(evse_id, {})
            # a change that came in while the first snapshot was taken may be older than it
            if str(doc.get("updated_at", "")) >= str(known.get("updated_at", "")):
                self.evses[evse_id] = doc
        elif kind == "meter" and isinstance(evse_id, int):
            self.samples[evse_id] = doc
        elif kind == "status" and doc:
            self.status = doc
        elif kind == "transition":
            self.transitions.append(str(event.get("line", "")))
        self.changes += 1

    def render(self) -> RenderableType:
        header = status_header(self.status)
        header.append(f"   {self.changes} changes   Ctrl-C to quit", style="dim")
        parts: list[RenderableType] = [header, evse_table([self.evses[k] for k in sorted(self.evses)], self.samples)]
        if self.transitions:
            parts.append(Text("recent transitions:", style="bold"))
            parts.extend(Text(f"  {line}") for line in self.transitions)
        return Group(*parts)
