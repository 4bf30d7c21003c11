"""The desktop app (PySide6 + pyqtgraph). The only package that imports Qt.

Modules, by the part of the window they serve (each ~400 lines at most):
- the window: app (entry point), main_window (builds and wires it) and the parts it mixes in:
  window_layout, window_control (Start/Pause/Stop, queue), window_events (the in-app run),
  window_launches (runs in their own processes), window_status, window_files (File/Help
  actions, settings); help_menu, catalog_dialog, figure_export, gc_guard, settings, log_pane;
- run setup: run_form (+ run_form_sections, run_form_values), fields (editors generated from
  the pydantic schemas), presets, shape_check, run_queue, worker (training/evaluation threads
  and the Qt bridge listener), follower (runs of other processes, through the catalog);
- live view: live_plots (+ live_trace, live_run_list, live_budget, live_ranges, buffers),
  adaptation_view;
- experiments browser: browser (+ browser_model, browser_filters, browser_table, browser_sync,
  browser_details, browser_curves, browser_compare, browser_config, browser_checkpoints,
  browser_actions);
- sweeps: sweep_view (+ sweep_plots, sweep_trials, sweep_axes), sweep_dialog.
"""
