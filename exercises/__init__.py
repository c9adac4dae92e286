"""Classroom exercises: rebuild the pieces of Pix2Seq-D one function at a time (see README.md)."""
