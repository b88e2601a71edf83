"""Whole jobs on one machine: the three-thread streaming video path (`video`: decode, SR, encode) and still images
and folders of them (`images`)."""
