from vsearch.cli.main import run

run()
