#!/bin/bash
# The verifier: reward 1 when /app/hello.txt holds exactly "Hello, world!".
if [ "$(cat /app/hello.txt 2>/dev/null)" = "Hello, world!" ]; then
  echo 1 > /logs/verifier/reward.txt
  echo "PASS: /app/hello.txt is right"
else
  echo 0 > /logs/verifier/reward.txt
  echo "FAIL: /app/hello.txt is missing or wrong: $(head -c 200 /app/hello.txt 2>&1)"
fi
