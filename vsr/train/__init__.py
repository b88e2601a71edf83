"""The paper's training and evaluation: datasets and sub-images (`data`), getting them (`download`), training
(`training`), PSNR/SSIM (`metrics`) and the evaluation protocol (`evaluate`)."""
