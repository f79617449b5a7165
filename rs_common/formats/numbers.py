"""Number syntax of annotation files (DOTA labelTxt, VOC xml, COCO json values read as text), one definition for every
reader. Python's float() also takes "1_0" (= 10) and surrounding blanks; a label line "1_0 5 ..." is a typo, not a ten.
NaN/inf match here and are reported by the box checks that use them."""

import re

NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
INT_TEXT = re.compile(r"[+-]?\d+")
