"""Row names in grid margins: ASCII names in Pillow's built-in font (grids as they always were), other names in a
font that has their letters, never boxes."""
import numpy as np
import torch
from PIL import ImageFont

from pipeline import figures


def margin(names):
    picture = figures.grid_picture(torch.zeros(len(names), 3, 8, 8), nrow=1, row_names=names)
    return np.asarray(picture)[:, :-12]  # the names' margin (the one tile column and its padding cut off)


def test_ascii_names_keep_the_built_in_font():
    font, names = figures.name_font(["cat", "dog"])
    assert names == ["cat", "dog"] and font.getname() == ImageFont.load_default(size=11).getname()


def test_names_beyond_ascii_are_drawn_in_letters_not_boxes():
    font, names = figures.name_font(["Café", "Кот", "猫 cat"])
    assert names == ["Café", "Кот", "? cat"]  # a character the font lacks is a '?', not a box
    box = bytes(font.getmask("\uffff"))  # what a font draws for a letter it does not have
    assert all(bytes(font.getmask(letter)) != box for letter in "éКот")
    builtin = ImageFont.load_default(size=11)
    assert bytes(builtin.getmask("К")) == bytes(builtin.getmask("\uffff"))  # the box the built-in font drew
    assert (margin(["Кот"]) < 128).any()
    assert not np.array_equal(margin(["Café"]), margin(["Cafe"]))  # the accent is drawn
