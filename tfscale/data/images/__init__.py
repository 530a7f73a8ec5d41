"""Images as elements: header checks and codecs, batch decoding, skip mode's fallback, the transforms of
`Pipeline.decode_images` / `resize` / `augment`, and the image folder source.

Everything here sits below `Pipeline` (tests/test_data_layers.py); the public factory that builds a pipeline on
these parts is `tfscale.data.image_folder` (data/image_folder.py).

- codecs.py: the whole-image check, sizes read from headers, decoding (JPEG at reduced scale);
- decoding.py: files or bytes to batches of float images (`BatchDecoder`), checked;
- fallback.py: skip mode's second try, one image at a time, for a part whose decode call failed;
- ops.py: `ImageMethods`, the image transforms of `Pipeline`;
- files.py: the folder source, one subfolder per class.
"""
