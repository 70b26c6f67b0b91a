"""What every family's engines share: the engine interface (base.py), the count of busy
engine processes that sizes their threads (busy_board.py) and the receptive field of a
convolutional decoder (receptive_field.py). Each family's own runtimes live in its folder
(stages/families/<name>/)."""
