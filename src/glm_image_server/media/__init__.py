"""Image bytes in and out: decoding inputs, encoding outputs."""
