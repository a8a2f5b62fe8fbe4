P=/work/main/.venv/bin/python
run() { /work/bin/cpu-slot $P exp4.py 1 2 "$1" $2 $3 $4 2>/dev/null | tail -1; }
run '{"ntp_optimizer":"adam","ntp_lr":0.01,"ntp_steps":32,"ntp_rank":32,"layers":[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]}' joined 1.0
run '{"ntp_optimizer":"adam","ntp_lr":0.01,"ntp_steps":32,"ntp_rank":32,"layers":[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]}' joined 0.25
run '{"ntp_optimizer":"adam","ntp_lr":0.003,"ntp_steps":64,"ntp_rank":32,"layers":[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]}' joined 1.0
run '{"ntp_optimizer":"adam","ntp_lr":0.01,"ntp_steps":64,"ntp_rank":32,"layers":[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29],"max_update_norm":1000}' joined 0.25
