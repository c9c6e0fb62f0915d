#!/bin/bash
# The verifier: the fraction of tests that pass, as JSON.
cd /tests
python3 -m pytest -q -p no:cacheprovider test_fizzbuzz.py | tee /logs/verifier/pytest.log
passed=$(grep -oE '[0-9]+ passed' /logs/verifier/pytest.log | grep -oE '[0-9]+' || echo 0)
python3 -c "import json; json.dump({'reward': 1.0 if $passed == 3 else 0.0, 'tests_passed': $passed}, open('/logs/verifier/reward.json', 'w'))"
