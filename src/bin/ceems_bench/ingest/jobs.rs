//! The jobs the stand-in `sacct` (`tests/fixtures/bulk-slurm/sacct`) prints, computed the
//! same way, and the power and CPU usage the backfill gives each of them.

/// The stream of one run: `count` jobs starting over one hour from `epoch`, with both ends
/// of every job on a multiple of `align` seconds (the scrape interval).
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub count: i64,
    /// Epoch seconds of job 0 (a multiple of `align`).
    pub epoch: i64,
    pub align: i64,
}

/// One job as the stand-in prints it, with its series' constant values.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub uuid: String,
    /// Epoch seconds.
    pub start: i64,
    pub end: i64,
    pub watts: f64,
    pub cpu_usage: f64,
}

impl Job {
    /// Its energy in kWh: `watts` over its whole run.
    pub fn energy_kwh(&self) -> f64 {
        self.watts * (self.end - self.start) as f64 / 3.6e6
    }
}

impl Stream {
    /// The stand-in's `FAKE_SACCT_RATE`: jobs per hour, so that exactly `count` jobs start
    /// before `until`.
    pub fn rate(&self) -> i64 {
        self.count
    }

    /// The stand-in's `FAKE_SACCT_UNTIL`: no job starts at or after it.
    pub fn until(&self) -> i64 {
        self.epoch + 3600
    }

    /// The end of the last job.
    pub fn last_end(&self) -> i64 {
        self.jobs().map(|job| job.end).max().unwrap_or(self.epoch)
    }

    /// The environment the stand-in reads.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TZ", "UTC".to_owned()),
            ("FAKE_SACCT_RATE", self.rate().to_string()),
            ("FAKE_SACCT_EPOCH", self.epoch.to_string()),
            ("FAKE_SACCT_UNTIL", self.until().to_string()),
            ("FAKE_SACCT_ALIGN", self.align.to_string()),
        ]
    }

    /// Job `i` (0-based), by the stand-in's formulas: start `epoch + i × 3600 / rate`,
    /// duration `300 + (i × 7919) mod 7200`, both rounded down to `align`.
    pub fn job(&self, i: i64) -> Job {
        let start = self.epoch + i * 3600 / self.rate();
        let start = start - start % self.align;
        let duration = 300 + (i * 7919) % 7200;
        Job {
            uuid: (100_000 + i).to_string(),
            start,
            end: start + duration - duration % self.align,
            // A node's worth of power and a CPU usage in percent, both varied by job.
            watts: 150.0 + (i % 400) as f64,
            cpu_usage: 5.0 + (i % 90) as f64,
        }
    }

    pub fn jobs(&self) -> impl Iterator<Item = Job> + '_ {
        (0..self.count).map(|i| self.job(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_follow_the_stand_in() {
        // 2024-01-10T00:00:00Z, 2000 jobs an hour, aligned to 60 s.
        let stream = Stream {
            count: 2000,
            epoch: 1_704_844_800,
            align: 60,
        };
        let job = stream.job(1);
        // Starts 1.8 s after the epoch (rounded down to it) and runs 300 + 7919 % 7200 = 1019 s,
        // rounded down to 960 s.
        assert_eq!(
            (job.uuid.as_str(), job.start, job.end),
            ("100001", 1_704_844_800, 1_704_845_760)
        );
        assert_eq!(stream.job(1999).start, 1_704_844_800 + 3540);
        assert_eq!(stream.jobs().count(), 2000);
    }
}
