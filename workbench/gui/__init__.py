"""The desktop app (PySide6 + pyqtgraph). The only package that imports Qt.

Modules: app (entry point), main_window, run_form (+ fields: editors generated from the
pydantic schemas), presets, worker (training/evaluation threads and the Qt bridge listener),
run_queue (one run after another), live_plots (+ buffers), adaptation_view, browser_model,
browser (experiments browser), log_pane, settings.
"""
