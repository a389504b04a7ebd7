"""The comparison of two extent maps (on_node/btrfs_extents.py) on maps made here, item by
item as the search returns them; test_delta_copy.py runs the copy on a real btrfs."""

from __future__ import annotations

from flocker_provider.on_node.btrfs_extents import ITEM, ITEM_LENGTH, REGULAR, changed_spans

K, M = 1024, 1024 * 1024
EXTENT_DATA = 108


def extent_map(*items: tuple[int, int, int, int, int]) -> bytes:
    """Items (file offset, bytes, disk address, offset in the extent, generation), each in a
    leaf of transid 100 + its position (a leaf's transid is not compared)."""
    return b"".join(
        ITEM.pack(100 + n, 257, offset, EXTENT_DATA, ITEM_LENGTH, generation, M, 0, 0, 0, REGULAR, address, M, in_extent, length)
        for n, (offset, length, address, in_extent, generation) in enumerate(items)
    )


ONE = extent_map((0, M, 5000, 0, 7))


def test_the_same_map_changed_nothing_whatever_its_leaves_transids() -> None:
    assert changed_spans(ONE, extent_map((0, M, 5000, 0, 7))) == []


def test_a_write_in_the_middle_of_an_extent_changed_only_its_bytes() -> None:
    split = extent_map((0, 8 * K, 5000, 0, 7), (8 * K, 8 * K, 9000, 0, 9), (16 * K, M - 16 * K, 5000, 16 * K, 7))
    assert changed_spans(ONE, split) == [(8 * K, 16 * K)]
    assert changed_spans(split, ONE) == [(8 * K, 16 * K)]


def test_a_punched_hole_changed_its_bytes_though_no_item_says_so() -> None:
    punched = extent_map((0, 8 * K, 5000, 0, 7), (16 * K, M - 16 * K, 5000, 16 * K, 7))
    assert changed_spans(ONE, punched) == [(8 * K, 16 * K)]


def test_an_address_reused_by_a_later_transaction_is_another_extent() -> None:
    assert changed_spans(ONE, extent_map((0, M, 5000, 0, 12))) == [(0, M)]


def test_the_same_bytes_of_the_extent_at_another_file_offset_changed() -> None:
    shifted = extent_map((0, 64 * K, 5000, 64 * K, 7), (64 * K, M - 64 * K, 5000, 0, 7))
    assert changed_spans(ONE, shifted) == [(0, M)]


def test_truncation_and_extension_change_what_they_remove_and_add() -> None:
    half = extent_map((0, M // 2, 5000, 0, 7))
    assert changed_spans(ONE, half) == [(M // 2, M)]
    longer = extent_map((0, M, 5000, 0, 7), (M, 64 * K, 7000, 0, 9))
    assert changed_spans(ONE, longer) == [(M, M + 64 * K)]
