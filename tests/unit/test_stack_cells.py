"""The local stack's loads cells (relay dev --cells N): process names, log files, the cell
URL lists, without starting anything."""

from __future__ import annotations

import pytest

from relay.cloud import cell_names
from relay.stack import LocalStack, _url_key, _with_cell_url, log_name, module_of


def test_a_celled_stack_runs_one_loads_process_per_cell_and_no_loads():
    stack = LocalStack(cells=2)
    processes = stack.module_processes
    assert processes["loads/cell-1"] == ("LoadsFunction", "cell-1")
    assert processes["loads/cell-2"] == ("LoadsFunction", "cell-2")
    assert "loads" not in processes
    assert processes["gatepass"] == ("GatepassFunction", None)
    assert stack.cell_names == ["cell-1", "cell-2"]


def test_an_uncelled_stack_runs_loads_as_before():
    stack = LocalStack()
    assert stack.module_processes["loads"] == ("LoadsFunction", None)
    assert stack.cell_names == []
    assert not [n for n in stack.module_processes if "/" in n]


def test_a_cell_s_names_have_no_slash_where_a_file_or_key_needs_none():
    assert log_name("loads/cell-1") == "loads-cell-1.log"
    assert log_name("loads/cell-1@abc123") == "loads-cell-1@abc123.log"
    assert log_name("gatepass") == "gatepass.log"
    assert module_of("loads/cell-2") == "loads" and module_of("message") == "message"
    assert _url_key("LoadsFunction", "cell-2") == "LoadsApp/cell-2/LoadsFunction"
    assert _url_key("GatepassFunction", None) == "GatepassFunction"


def test_a_promoted_cell_s_url_replaces_only_its_entry():
    value = "cell-1=http://127.0.0.1:1/,cell-2=http://127.0.0.1:2/"
    assert _with_cell_url(value, "cell-2", "http://127.0.0.1:3/") == (
        "cell-1=http://127.0.0.1:1/,cell-2=http://127.0.0.1:3/"
    )


@pytest.mark.parametrize("cells", [0, 5])
def test_a_stage_has_one_to_four_cells(cells: int):
    assert cell_names(1) == [] and cell_names(4)[-1] == "cell-4"
    with pytest.raises(ValueError, match="1 to 4"):
        cell_names(cells)
