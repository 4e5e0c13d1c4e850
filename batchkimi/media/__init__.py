"""Images and video from local files: where they are, what they are, and how they
go on the wire (data URLs, the temporary upload, or frames extracted locally)."""
