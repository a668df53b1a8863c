"""Inputs: an uploaded file's bytes to an upright greyscale film, inside limits (decode, DICOM, pixels, photo, orientation, the decoding sandbox, URLs)."""
