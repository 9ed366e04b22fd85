"""Watching a run: the report as data and text (``report_io``), the stats hook, the
progress bar, the live listing of steps (``BotFrame.bots``), item traces and the log
prefix. They attach from the façade; the engine imports none of them.
"""
