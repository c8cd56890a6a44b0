"""`disagg replay`: trace replay against an OpenAI-compatible server.

workload plans the requests (scaled times and token counts), runner sends
and times them, report summarizes, writes the JSON report and plots.
"""
