"""Load generator behind `supernode bench`: workloads, arrival processes, a runner, and reports.

Pure parts (no I/O, no clock): `arrivals`, `lengths`, `tokens`, `workloads`, `trace`, `stats`, `timeline`,
`scenarios`. Adapters: `targets` (SDK, in-process stub), `http_target` (OpenAI-compatible SSE), `runner`
(the one place that waits), `report` and `plots` (files), `cli`.
"""
