"""Starting the desktop app on a Linux desktop that lacks the system libraries Qt's xcb plugin
needs: one clear line with the apt command, exit status 1, instead of Qt's abort."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.gui import app

LINUX_DESKTOP = {"DISPLAY": ":0"}  # QT_QPA_PLATFORM unset: Qt would pick xcb


def only_missing(*names: str):
    return lambda lib: lib not in names


def test_missing_xcb_library_prints_the_apt_command_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(app.os, "environ", {**LINUX_DESKTOP})
    monkeypatch.setattr(app.sys, "platform", "linux")
    monkeypatch.setattr(app, "_loadable", only_missing("libxcb-cursor.so.0"))

    class NoQApplication:  # the check must come before Qt is asked for a platform plugin
        @staticmethod
        def instance() -> None:
            return None

        def __init__(self, *_: object) -> None:
            raise AssertionError("QApplication created although xcb cannot start")

    monkeypatch.setattr(app, "QApplication", NoQApplication)
    assert app.main(["--db", str(tmp_path / "runs.db")]) == 1
    err = capsys.readouterr().err
    assert "libxcb-cursor.so.0" in err
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0" in err
    assert not (tmp_path / "runs.db").exists()  # nothing was opened


@pytest.mark.parametrize(
    ("env", "platform"),
    [
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux"),  # not xcb
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"}, "linux"),
        ({}, "linux"),  # no X display: Qt will not try xcb's libraries either
        (LINUX_DESKTOP, "darwin"),
        (LINUX_DESKTOP, "win32"),
    ],
)
def test_no_check_where_qt_does_not_use_xcb(env: dict[str, str], platform: str) -> None:
    nothing = only_missing(*app.XCB_LIBRARIES)
    assert app.missing_xcb_libraries(env, platform, nothing) == []
    assert app.check_xcb(env, platform, nothing) is None


def test_xcb_check_lists_exactly_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"DISPLAY": ":1", "QT_QPA_PLATFORM": "xcb"}
    assert app.check_xcb(env, "linux", lambda lib: True) is None
    assert capsys.readouterr().err == ""
    missing = app.missing_xcb_libraries(env, "linux", only_missing("libxcb-icccm.so.4"))
    assert missing == ["libxcb-icccm.so.4"]
    everything = app.missing_xcb_libraries(env, "linux", only_missing(*app.XCB_LIBRARIES))
    assert everything == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"]


def test_real_loader_finds_a_library_that_exists_and_not_one_that_does_not() -> None:
    assert app._loadable("libc.so.6")
    assert not app._loadable("libxcb-does-not-exist.so.0")
