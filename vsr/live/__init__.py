"""The live preview, `vsr webcam`: sources (`capture`), the window and its drawing (`preview`) and the session that
ties them to the engine and the recorder (`webcam`)."""
