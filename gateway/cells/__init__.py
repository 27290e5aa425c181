"""Cells: celled modules, the placement of partition keys, the cell router (docs/cells.md)."""
