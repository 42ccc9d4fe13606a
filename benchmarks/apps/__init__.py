"""One small FastAPI app per benchmark setup; ``run.py`` serves ``apps.<module>:app`` under uvicorn."""
