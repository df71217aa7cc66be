//! The background thread that owns the burn device and the sampler.
//!
//! The UI talks to it only through two channels: [`Command`] in, [`Event`] out. Each event
//! wakes the UI. A run is computed step by step; between steps the worker looks for new
//! commands, and inside every long stage (loading a dataset, cutting a key bank, a step's
//! key chunks, ranking a pixel's votes) the shared cancel token is checked, so a slider move
//! stops the work within milliseconds. A panic inside a run becomes an [`Event::Error`] and
//! the worker carries on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};

use crate::data::{Dataset, DatasetSource, LoadOptions};
use crate::engine::{
    self, Call, CancelToken, Control, Denoiser, DeviceChoice, ImageShape, Inspection, Sampler, SamplerConfig,
    StepRecord,
};
use crate::memory::{Meter, Pool};
use crate::recipe::Recipe;

/// How often an idle worker looks at its budget.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Identifies one run (a restart or branch gets a new id), so stale events can be ignored.
pub type RunId = u64;

/// UI → worker.
#[derive(Clone, Debug)]
pub enum Command {
    /// Start a fresh run of `recipe`. A recipe that was branched (`branched_from`) or starts
    /// from a given x (`init`) is replayed whole: every step from 0 is computed and sent.
    Start { run: RunId, recipe: Recipe },
    /// Continue from step `from_step`, whose starting state was `x_t`, with new settings;
    /// earlier steps are kept by the UI.
    Branch { run: RunId, recipe: Recipe, from_step: usize, x_t: Vec<f32> },
    /// Stop the run in flight.
    Cancel,
    /// Rank the training candidates behind pixel (y, x) of step `step`'s x̂₀. `dataset_hash`
    /// names the training set the run used: a different loaded set is never ranked instead.
    /// The `top` largest votes for pixel (y, x) of x̂₀(x_t).
    Inspect {
        run: RunId,
        dataset_hash: Option<String>,
        step: usize,
        x_t: Vec<f32>,
        call: Call,
        y: usize,
        x: usize,
        top: usize,
    },
    /// ∂x̂₀ at pixel (y, x) over x_t at each of a run's steps `(step, x_t, call)`, one
    /// [`Event::Sensitivity`] per step as it is done (compare mode sets the two columns'
    /// maps side by side and follows their cosine over the run).
    Sensitivity { run: RunId, dataset_hash: Option<String>, y: usize, x: usize, steps: Vec<(usize, Vec<f32>, Call)> },
    /// Fit P per step to the CNN along its own runs from seeds 0..`seeds`
    /// ([`crate::engine::analysis::calibrate`]): `recipe` names the dataset and the CNN's sampler
    /// settings (its machine is taken to be the CNN); candidates are odd P up to `max_p`.
    Calibrate { run: RunId, recipe: Recipe, seeds: u64, max_p: u32 },
    /// Panic on purpose inside the worker: the tests check that a panic becomes an error
    /// message, not a dead worker. Nothing in the studio sends it.
    #[doc(hidden)]
    Crash,
}

/// What the UI needs to know about a loaded dataset.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    pub source: DatasetSource,
    pub options: LoadOptions,
    pub shape: ImageShape,
    pub len: usize,
    pub classes: Vec<String>,
    pub summary: String,
    /// Skipped files and why.
    pub skipped: Vec<String>,
    pub hash: String,
    /// Up to 24 images for a thumbnail strip, [C, H, W] each.
    pub thumbnails: Vec<Vec<f32>>,
    /// Every training image ([N, C, H, W]) when the set is small enough to copy (at most
    /// [`UI_IMAGES_MAX`] values; every bundled set is), so the provenance maps can show the
    /// image a pixel came from without asking the worker.
    pub images: Option<std::sync::Arc<Vec<f32>>>,
}

/// The most training-image values sent to the UI (16 MB of f32).
pub const UI_IMAGES_MAX: usize = 4 << 20;

/// Worker → UI.
#[derive(Clone, Debug)]
pub enum Event {
    Device {
        description: String,
        notice: Option<String>,
    },
    Dataset(Box<DatasetInfo>),
    /// A run has its data and device: the recipe records these, not what was asked for
    /// (`auto` becomes the device actually used).
    Started {
        run: RunId,
        device: DeviceChoice,
        dataset_hash: String,
    },
    /// Chunks done within the step being computed.
    Progress {
        run: RunId,
        step: usize,
        done: usize,
        total: usize,
    },
    Step {
        run: RunId,
        record: Box<StepRecord>,
        seconds: f64,
    },
    Finished {
        run: RunId,
    },
    /// The ranked votes of a pixel, with each candidate's patch ([C, P, P]) or image.
    /// A calibration's fitted P per step, with every seed's choice and cosines.
    Calibrated {
        run: RunId,
        fits: Vec<crate::engine::analysis::calibrate::StepFit>,
    },
    Inspected {
        run: RunId,
        step: usize,
        y: usize,
        x: usize,
        result: Box<Inspection>,
        /// Each vote's patch (or image, for the whole-image machines).
        crops: Vec<(ImageShape, Vec<f32>)>,
        /// Each vote's whole training image, to show where its patch sits.
        images: Vec<Vec<f32>>,
        /// The query: x_t's window around the pixel (its whole image for whole-image machines).
        /// What the pixel is sensitive to: ∂x̂₀/∂x_t over the canvas ([H·W], summed over input
        /// channels and averaged over the pixel's), for the machines with a Jacobian.
        sensitivity: Option<Vec<f64>>,
        /// The side of the square the pixel can read, where that is not the votes' window: the
        /// CNN's receptive field (its map is the effective one inside it).
        reach: Option<usize>,
        query: (ImageShape, Vec<f32>),
    },
    /// When classes separate and when a run snaps to one training image, predicted from the
    /// loaded training set (computed once per set, while the worker is otherwise idle).
    Regimes {
        dataset_hash: String,
        prediction: Result<crate::engine::analysis::regimes::Prediction, String>,
    },
    /// One step's sensitivity map of a [`Command::Sensitivity`] ([H·W], as in
    /// [`Event::Inspected`]); None when the machine has no Jacobian.
    Sensitivity {
        run: RunId,
        step: usize,
        y: usize,
        x: usize,
        map: Option<Vec<f64>>,
    },
    /// Something the user should know that stops nothing (the GPU could not run a call and
    /// the CPU did).
    Notice {
        message: String,
    },
    Error {
        run: Option<RunId>,
        message: String,
    },
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    tx: Sender<Command>,
    pub events: Receiver<Event>,
    cancel: Arc<Mutex<CancelToken>>,
    /// The token of the worker's idle-time work (a set's regimes): any command stops it.
    idle: Arc<Mutex<CancelToken>>,
    thread: Option<JoinHandle<()>>,
    /// What the worker holds, as it last reported.
    meter: Arc<Meter>,
}

impl WorkerHandle {
    /// Spawns the worker; `wake` is called after every event (the UI passes `request_repaint`).
    /// The worker draws on the process's [`Pool::global`] budget.
    pub fn spawn(wake: impl Fn() + Send + 'static) -> Self {
        Self::spawn_in(&Pool::global(), false, wake)
    }

    /// A worker for a second view (compare column, seed grid, zoo, calibration): its caches
    /// are held to an eighth of the global budget, so three of them cannot each keep a
    /// main run's worth of key banks; past that it cuts keys per call (slower, bounded).
    pub fn spawn_secondary(wake: impl Fn() + Send + 'static) -> Self {
        Self::spawn_in(&Pool::global(), true, wake)
    }

    /// A worker whose caches draw on `pool` (tests give each their own).
    pub fn spawn_in(pool: &Arc<Pool>, secondary: bool, wake: impl Fn() + Send + 'static) -> Self {
        let (tx, rx) = unbounded();
        let (etx, events) = unbounded();
        let cancel = Arc::new(Mutex::new(CancelToken::new()));
        let shared = cancel.clone();
        let idle = Arc::new(Mutex::new(CancelToken::new()));
        let idle_shared = idle.clone();
        let meter = pool.join(secondary);
        let (pool, theirs) = (pool.clone(), meter.clone());
        let thread = std::thread::Builder::new()
            .name("morphogen-worker".into())
            .spawn(move || {
                let mut worker = Worker::new(rx, etx, shared, Box::new(wake), (pool, theirs));
                worker.predicts_regimes = !secondary;
                worker.idle = idle_shared;
                match secondary.then(background_pool).flatten() {
                    // The main run first: a secondary worker (compare column, seed grid, zoo,
                    // calibration) computes on one thread of its own at the lowest priority,
                    // instead of on every core beside the main run.
                    Some(pool) => {
                        lower_priority();
                        pool.install(|| worker.run())
                    }
                    None => worker.run(),
                }
            })
            .expect("cannot spawn the worker thread");
        Self { tx, events, cancel, idle, thread: Some(thread), meter }
    }

    /// What the worker holds as it last reported: (training data, caches) in bytes.
    pub fn memory(&self) -> (usize, usize) {
        (self.meter.data(), self.meter.caches())
    }

    /// A handle with no thread behind it: tests play the worker through the returned ends.
    pub fn detached() -> (Self, Receiver<Command>, Sender<Event>) {
        let (tx, commands) = unbounded();
        let (events_tx, events) = unbounded();
        let meter = Arc::new(Meter::default());
        let token = || Arc::new(Mutex::new(CancelToken::new()));
        let handle = Self { tx, events, cancel: token(), idle: token(), thread: None, meter };
        (handle, commands, events_tx)
    }

    /// Sends a command; starting, branching or cancelling first stops the step in flight, and
    /// any command stops idle-time work.
    pub fn send(&self, command: Command) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).cancel();
        if matches!(command, Command::Start { .. } | Command::Branch { .. } | Command::Cancel) {
            self.cancel.lock().unwrap_or_else(|e| e.into_inner()).cancel();
        }
        let _ = self.tx.send(command);
    }

    /// Whether the worker thread has stopped (it only stops if the UI drops its end).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }
}

struct Loaded {
    source: DatasetSource,
    options: LoadOptions,
    device: DeviceChoice,
    hash: String,
    denoiser: Denoiser,
    /// The weights file the CNN was attached from (None: the shipped weights, if any).
    cnn_from: Option<PathBuf>,
    /// [`Event::Regimes`] went out for this set.
    regimes_sent: bool,
}

/// One thread at the lowest priority, for a secondary worker's kernels (None when the OS will
/// not make a thread: the worker then shares the global pool).
fn background_pool() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "morphogen-background".into())
        .start_handler(|_| lower_priority())
        .build()
        .ok()
}

/// Lowers the calling thread's scheduling priority to the least (nice 19 on Linux), so the
/// main run's threads win every contended core. Elsewhere the one-thread pool alone bounds it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id, with a valid priority; it only
    // changes how the scheduler ranks this thread.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// The CNN weights file the studio names (`studio --cnn FILE`, "Load weights…"), read by
/// every worker of the process — the main run's, the compare column's, the calibration's —
/// when it next loads or runs: all of them run the same network.
static STUDIO_CNN: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Names the CNN weights file every worker attaches (None: a bundled set's shipped weights).
pub fn set_studio_cnn(path: Option<PathBuf>) {
    *STUDIO_CNN.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

/// The weights file the studio last named (None: the shipped weights).
pub fn studio_cnn() -> Option<PathBuf> {
    STUDIO_CNN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct Active {
    run: RunId,
    sampler: Sampler,
    /// Later segments of a replayed branched recipe: at `from_step` the run switches to
    /// these settings, oldest first.
    then: std::collections::VecDeque<(usize, SamplerConfig)>,
}

struct Worker {
    rx: Receiver<Command>,
    tx: Sender<Event>,
    cancel: Arc<Mutex<CancelToken>>,
    wake: Box<dyn Fn() + Send>,
    devices: Vec<(DeviceChoice, engine::ResolvedDevice)>,
    loaded: Option<Loaded>,
    active: Option<Active>,
    /// The budget this worker's caches draw on, and where it reports what it holds.
    pool: Arc<Pool>,
    meter: Arc<Meter>,
    /// The studio's main worker predicts each set's regimes for the timeline; the secondary
    /// views' workers do not need them.
    predicts_regimes: bool,
    /// The token [`WorkerHandle::send`] cancels on every command (see [`Self::predict_regimes`]).
    idle: Arc<Mutex<CancelToken>>,
}

/// The fields of a [`Command::Inspect`], handed to [`Worker::inspect`] as one value.
struct InspectJob {
    run: RunId,
    dataset_hash: Option<String>,
    step: usize,
    x_t: Vec<f32>,
    call: Call,
    y: usize,
    x: usize,
    top: usize,
}

impl Worker {
    fn new(
        rx: Receiver<Command>,
        tx: Sender<Event>,
        cancel: Arc<Mutex<CancelToken>>,
        wake: Box<dyn Fn() + Send>,
        (pool, meter): (Arc<Pool>, Arc<Meter>),
    ) -> Self {
        Self {
            rx,
            tx,
            cancel,
            wake,
            devices: Vec::new(),
            loaded: None,
            active: None,
            pool,
            meter,
            predicts_regimes: false,
            idle: Arc::new(Mutex::new(CancelToken::new())),
        }
    }

    /// Holds the caches to this worker's share of the pool (it changes with the budget and
    /// with the views open): past it, everything that can be rebuilt is dropped now.
    fn keep_to_budget(&mut self) {
        let share = self.pool.share(&self.meter);
        if let Some(l) = &mut self.loaded {
            l.denoiser.cache_budget_bytes = share;
            if l.denoiser.cache_bytes() > share {
                l.denoiser.evict(None);
                crate::memory::give_back_freed();
            }
        }
    }

    /// Reports what this worker holds to its meter.
    fn report_memory(&self) {
        let (data, caches) =
            self.loaded.as_ref().map(|l| (l.denoiser.data_bytes(), l.denoiser.cache_bytes())).unwrap_or((0, 0));
        self.meter.record(data, caches);
    }

    fn emit(&self, event: Event) {
        let _ = self.tx.send(event);
        (self.wake)();
    }

    fn run(mut self) {
        loop {
            // Block when idle; otherwise take what is queued and compute one step (or, with
            // no run, the loaded set's regimes).
            let command = if self.active.is_some() || self.regimes_pending() {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                // Idle, it still wakes once a second to follow a budget that was lowered.
                match self.rx.recv_timeout(IDLE_CHECK) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => {
                        self.keep_to_budget();
                        self.report_memory();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            self.keep_to_budget();
            let outcome = catch_unwind(AssertUnwindSafe(|| match command {
                Some(c) => self.handle(c),
                None if self.active.is_some() => self.step(),
                None => self.predict_regimes(),
            }));
            if let Err(panic) = outcome {
                let message = panic_text(&panic);
                let run = self.active.take().map(|a| a.run);
                // The device state may be inconsistent after a panic: start clean.
                self.loaded = None;
                self.emit(Event::Error { run, message: format!("the sampler crashed: {message}") });
            }
            let notices = self.loaded.as_mut().map(|l| l.denoiser.take_notices()).unwrap_or_default();
            for message in notices {
                self.emit(Event::Notice { message });
            }
            self.report_memory();
        }
    }

    fn regimes_pending(&self) -> bool {
        self.predicts_regimes && self.loaded.as_ref().is_some_and(|l| !l.regimes_sent)
    }

    /// Sends the loaded set's [`Event::Regimes`]. Any command arriving meanwhile (an inspect
    /// too, which does not stop a run) cancels it; it is tried again the next time the worker
    /// has nothing else to do.
    fn predict_regimes(&mut self) {
        let token = CancelToken::new();
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        if !self.rx.is_empty() {
            return;
        }
        let Some(loaded) = self.loaded.as_mut() else { return };
        let ctl = Control::new(&token, None);
        if let Ok(prediction) = crate::engine::analysis::regimes::predict_for(&mut loaded.denoiser, &ctl) {
            loaded.regimes_sent = true;
            let dataset_hash = loaded.hash.clone();
            self.emit(Event::Regimes { dataset_hash, prediction });
        }
    }

    fn fresh_token(&self) -> CancelToken {
        let token = CancelToken::new();
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Start { run, recipe } => self.begin(run, recipe, None),
            Command::Branch { run, recipe, from_step, x_t } => self.begin(run, recipe, Some((from_step, x_t))),
            Command::Cancel => self.cancel(),
            Command::Inspect { run, dataset_hash, step, x_t, call, y, x, top } => {
                self.inspect(InspectJob { run, dataset_hash, step, x_t, call, y, x, top })
            }
            Command::Sensitivity { run, dataset_hash, y, x, steps } => self.sensitivity(run, dataset_hash, y, x, steps),
            Command::Calibrate { run, recipe, seeds, max_p } => self.calibrate(run, recipe, seeds, max_p),
            Command::Crash => panic!("crash requested"),
        }
    }

    /// Drops the run in progress and cancels whatever computes for it.
    fn cancel(&mut self) {
        self.active = None;
        self.fresh_token();
    }

    /// Ranks the votes for one pixel of a run's step, if that run's training set is loaded.
    fn inspect(&mut self, job: InspectJob) {
        let InspectJob { run, dataset_hash, step, x_t, call, y, x, top } = job;
        let token = self.fresh_token();
        if let Err(message) = self.inspectable(dataset_hash.as_deref(), &call, x_t.len(), y, x) {
            return self.emit(Event::Error { run: Some(run), message });
        }
        let shape = call.canvas_shape(self.loaded.as_ref().expect("checked").denoiser.shape());
        let ctl = Control::new(&token, None);
        let top = top.clamp(1, MAX_INSPECT_TOP);
        let den = &mut self.loaded.as_mut().expect("checked above").denoiser;
        let Ok(result) = den.inspect(&x_t, &call, y, x, top, &ctl) else { return };
        let den = &*den;
        let train = den.shape();
        let crops = result.votes.iter().map(|v| crop(train, &den.training_image(v.image), v.y, v.x, &call)).collect();
        let images = result.votes.iter().map(|v| den.training_image(v.image)).collect();
        let query = crop(shape, &x_t, y, x, &call);
        let den = &mut self.loaded.as_mut().expect("checked above").denoiser;
        let Ok(jacobian) = den.jacobian(&x_t, &call, y, x, &ctl) else { return };
        let sensitivity = jacobian.map(|j| pixel_map(&j));
        let reach = (call.machine == engine::MachineKind::Cnn)
            .then(|| den.cnn().map(|c| c.header.shape.receptive_field()))
            .flatten();
        let result = Box::new(result);
        self.emit(Event::Inspected { run, step, y, x, result, crops, images, query, sensitivity, reach });
    }

    /// Why pixel (y, x) of an `x_len`-value x_t under `call` cannot be read against the loaded
    /// set (the run's set, named by `dataset_hash`, is no longer loaded; the pixel is outside).
    fn inspectable(
        &self,
        dataset_hash: Option<&str>,
        call: &Call,
        x_len: usize,
        y: usize,
        x: usize,
    ) -> Result<(), String> {
        let Some(loaded) = &self.loaded else { return Err("no dataset is loaded to inspect".into()) };
        let shape = call.canvas_shape(loaded.denoiser.shape());
        if dataset_hash.is_some_and(|h| h != loaded.hash) || x_len != shape.len() {
            return Err("that run's training set is no longer loaded: switch back to its dataset to inspect it".into());
        }
        if y >= shape.h || x >= shape.w {
            return Err(format!("pixel ({x}, {y}) is outside the {}×{} image", shape.w, shape.h));
        }
        Ok(())
    }

    /// [`Command::Sensitivity`]: each step's map in turn, until done or cancelled.
    fn sensitivity(
        &mut self,
        run: RunId,
        hash: Option<String>,
        y: usize,
        x: usize,
        steps: Vec<(usize, Vec<f32>, Call)>,
    ) {
        let token = self.fresh_token();
        for (step, x_t, call) in steps {
            if let Err(message) = self.inspectable(hash.as_deref(), &call, x_t.len(), y, x) {
                return self.emit(Event::Error { run: Some(run), message });
            }
            let den = &mut self.loaded.as_mut().expect("checked").denoiser;
            let Ok(jacobian) = den.jacobian(&x_t, &call, y, x, &Control::new(&token, None)) else { return };
            self.emit(Event::Sensitivity { run, step, y, x, map: jacobian.map(|j| pixel_map(&j)) });
        }
    }

    fn device(&mut self, choice: DeviceChoice) -> Result<engine::ResolvedDevice, String> {
        if let Some((_, d)) = self.devices.iter().find(|(c, _)| *c == choice) {
            return Ok(d.clone());
        }
        let resolved = engine::device::resolve(choice)?;
        self.emit(Event::Device { description: resolved.description.clone(), notice: resolved.notice.clone() });
        self.devices.push((choice, resolved.clone()));
        Ok(resolved)
    }

    /// Loads the dataset of a recipe unless it is already on the device. `Ok(false)`: the
    /// load was cancelled by a newer command.
    fn ensure_loaded(
        &mut self,
        source: &DatasetSource,
        options: &LoadOptions,
        device: DeviceChoice,
        token: &CancelToken,
    ) -> Result<bool, String> {
        if let Some(l) = &mut self.loaded
            && l.source == *source
            && l.options == *options
            && l.device == device
        {
            // Same data: only the CNN's weights may have been named since.
            let cnn = studio_cnn();
            if l.cnn_from != cnn {
                crate::engine::machines::cnn::attach(&mut l.denoiser, l.source.bundled_name(), cnn.as_deref());
                l.cnn_from = cnn;
            }
            return Ok(true);
        }
        // The old training set, its key banks and tables are unreachable now: free them before
        // loading the next, and give the pages back (else every switch adds to the process).
        if self.loaded.take().is_some() {
            crate::memory::give_back_freed();
        }
        let resolved = self.device(device)?;
        let dataset = match Dataset::load_cancellable(source, options, &|| token.is_cancelled()) {
            Ok(d) => d,
            Err(_) if token.is_cancelled() => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        let step = (dataset.len() / 24).max(1);
        let info = DatasetInfo {
            source: source.clone(),
            options: options.clone(),
            shape: dataset.shape,
            len: dataset.len(),
            classes: dataset.classes(),
            summary: dataset.report.summary(),
            skipped: dataset.report.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect(),
            hash: dataset.content_hash(),
            thumbnails: (0..dataset.len()).step_by(step).take(24).map(|k| dataset.image(k).to_vec()).collect(),
            images: (dataset.images.len() <= UI_IMAGES_MAX).then(|| std::sync::Arc::new(dataset.images.clone())),
        };
        let mut denoiser = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &resolved.device);
        let bundled = source.bundled_name();
        let cnn_from = studio_cnn();
        crate::engine::machines::cnn::attach(&mut denoiser, bundled, cnn_from.as_deref());
        denoiser.cache_budget_bytes = self.pool.share(&self.meter);
        let hash = info.hash.clone();
        self.loaded = Some(Loaded {
            source: source.clone(),
            options: options.clone(),
            device,
            hash,
            denoiser,
            cnn_from,
            regimes_sent: false,
        });
        self.emit(Event::Dataset(Box::new(info)));
        Ok(true)
    }

    /// Runs a calibration to the end (or a cancel), reporting progress as denoiser calls.
    fn calibrate(&mut self, run: RunId, recipe: Recipe, seeds: u64, max_p: u32) {
        self.active = None;
        let token = self.fresh_token();
        let result = (|| -> Result<Option<Vec<crate::engine::analysis::calibrate::StepFit>>, String> {
            recipe.validate()?;
            if !self.ensure_loaded(&recipe.dataset, &recipe.load, recipe.device, &token)? {
                return Ok(None);
            }
            let reference = SamplerConfig { machine: crate::engine::MachineKind::Cnn, ..recipe.sampler.clone() };
            let loaded = self.loaded.as_mut().expect("just loaded");
            loaded.denoiser.check_run(&reference)?;
            let s = loaded.denoiser.shape();
            let boundary = reference.boundary;
            let max = crate::engine::MachineKind::Els.max_patch(boundary, s.h, s.w).min(max_p);
            let candidates: Vec<u32> = (1..=max.max(1)).step_by(2).collect();
            let seed_list: Vec<u64> = (0..seeds.max(1)).collect();
            let (tx, wake) = (self.tx.clone(), &self.wake);
            let mut progress = |done: usize, total: usize| {
                let _ = tx.send(Event::Progress { run, step: 0, done, total });
                wake();
            };
            let fits = crate::engine::analysis::calibrate::calibrate(
                &mut loaded.denoiser,
                &reference,
                &seed_list,
                &candidates,
                boundary,
                &mut Control::new(&token, None),
                &mut progress,
            );
            Ok(fits.ok())
        })();
        match result {
            Ok(Some(fits)) => self.emit(Event::Calibrated { run, fits }),
            Ok(None) => {}
            Err(message) => self.emit(Event::Error { run: Some(run), message }),
        }
    }

    fn begin(&mut self, run: RunId, recipe: Recipe, branch: Option<(usize, Vec<f32>)>) {
        self.active = None;
        let token = self.fresh_token();
        match self.prepare(run, &recipe, branch, &token) {
            Ok(Some(active)) => self.active = Some(active),
            Ok(None) => {} // cancelled while loading: a newer command is waiting
            Err(message) => self.emit(Event::Error { run: Some(run), message }),
        }
    }

    /// Everything a run needs before its first step: the data, the device, the checks that
    /// every step fits in memory, and the sampler (for a replayed branch, its segments).
    fn prepare(
        &mut self,
        run: RunId,
        recipe: &Recipe,
        branch: Option<(usize, Vec<f32>)>,
        token: &CancelToken,
    ) -> Result<Option<Active>, String> {
        recipe.validate()?;
        if !self.ensure_loaded(&recipe.dataset, &recipe.load, recipe.device, token)? {
            return Ok(None);
        }
        let loaded = self.loaded.as_ref().expect("just loaded");
        if let Some(expected) = &recipe.dataset_hash
            && *expected != loaded.hash
        {
            return Err(format!(
                "the dataset {} no longer matches the recipe (its content hash changed), so the run cannot be reproduced",
                recipe.dataset.label()
            ));
        }
        let shape = loaded.denoiser.shape();
        let mut segments: std::collections::VecDeque<_> = recipe.segments().into();
        for (_, cfg) in &segments {
            loaded.denoiser.check_run(cfg)?;
        }
        let device =
            self.devices.iter().find(|(c, _)| *c == recipe.device).map(|(_, d)| d.kind).unwrap_or(recipe.device);
        let hash = loaded.hash.clone();
        let sampler = match branch {
            Some((step, x_t))
                if x_t.len() == recipe.sampler.canvas_shape(shape).len() && step < recipe.sampler.steps =>
            {
                segments.clear();
                Sampler::resume(recipe.sampler.clone(), step, x_t)
            }
            Some(_) => return Err("cannot branch: the step is outside the new run".into()),
            None => {
                let init = match recipe.root().init.as_deref() {
                    Some(path) => Some(crate::data::read_image_npy(path, shape).map_err(|e| e.to_string())?),
                    None => None,
                };
                let (_, first) = segments.pop_front().expect("a recipe has at least one segment");
                Sampler::new(first, shape, init)
            }
        };
        self.emit(Event::Started { run, device, dataset_hash: hash });
        Ok(Some(Active { run, sampler, then: segments }))
    }

    fn step(&mut self) {
        let token = self.cancel.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some(active), Some(loaded)) = (self.active.as_mut(), self.loaded.as_mut()) else {
            self.active = None;
            return;
        };
        let run = active.run;
        let step = active.sampler.next_step();
        if active.then.front().is_some_and(|(from, _)| *from == step) {
            let (from, cfg) = active.then.pop_front().expect("checked");
            active.sampler = Sampler::resume(cfg, from, active.sampler.state().to_vec());
        }
        let tx = self.tx.clone();
        let wake = &self.wake;
        let mut last = Instant::now();
        let mut progress = |done: usize, total: usize| {
            // Progress at most ~30 times a second: it is for a bar, not a log.
            if last.elapsed().as_millis() >= 33 || done == total {
                last = Instant::now();
                let _ = tx.send(Event::Progress { run, step, done, total });
                wake();
            }
        };
        let started = Instant::now();
        let mut ctl = Control::new(&token, Some(&mut progress));
        // The studio shows provenance maps: the kernels track them at almost no cost.
        active.sampler.set_maps(true);
        match active.sampler.step(&mut loaded.denoiser, &mut ctl) {
            None => {
                self.active = None;
                self.emit(Event::Finished { run });
            }
            Some(Err(engine::Cancelled)) => self.active = None,
            Some(Ok(record)) => {
                let done = active.sampler.is_done();
                self.emit(Event::Step { run, record: Box::new(record), seconds: started.elapsed().as_secs_f64() });
                if done {
                    self.active = None;
                    self.emit(Event::Finished { run });
                }
            }
        }
    }
}

/// What the studio draws of a Jacobian: each input pixel's entry summed over input channels,
/// averaged over the pixel's output channels ([H·W]).
fn pixel_map(j: &engine::analysis::jacobian::Jacobian) -> Vec<f64> {
    let s = j.shape;
    let maps: Vec<Vec<f64>> = (0..s.c).map(|o| j.map(o)).collect();
    (0..s.pixels()).map(|p| maps.iter().map(|m| m[p]).sum::<f64>() / s.c as f64).collect()
}

/// The message a panic carried.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    crate::engine::control::panic_text(&**panic)
}

/// The most votes one inspection returns.
pub const MAX_INSPECT_TOP: usize = 200;

/// The P×P window of `img` (of `shape`) around (y, x), −1 outside; the whole image for
/// machines without a window.
fn crop(shape: ImageShape, img: &[f32], y: usize, x: usize, call: &Call) -> (ImageShape, Vec<f32>) {
    if !call.machine.uses_patch() {
        return (shape, img.to_vec());
    }
    let p = call.patch.max(1) | 1;
    let r = (p / 2) as isize;
    let hw = shape.pixels();
    let mut out = Vec::with_capacity(shape.c * p * p);
    for c in 0..shape.c {
        for dy in -r..=r {
            for dx in -r..=r {
                let (py, px) = (y as isize + dy, x as isize + dx);
                let inside = py >= 0 && px >= 0 && (py as usize) < shape.h && (px as usize) < shape.w;
                out.push(if inside { img[c * hw + py as usize * shape.w + px as usize] } else { -1.0 });
            }
        }
    }
    (ImageShape { c: shape.c, h: p, w: p }, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle-time work stops at any command, an inspect included, which leaves a run's token
    /// alone; a start stops both.
    #[test]
    fn any_command_stops_idle_work_and_only_starts_stop_the_run() {
        let (handle, _commands, _events) = WorkerHandle::detached();
        let idle = CancelToken::new();
        *handle.idle.lock().unwrap() = idle.clone();
        let run = handle.cancel.lock().unwrap().clone();
        let call = Call::new(crate::engine::MachineKind::Els, crate::engine::Boundary::Zeros, 3, 0.5);
        handle.send(Command::Inspect {
            run: 1,
            dataset_hash: None,
            step: 0,
            x_t: vec![0.0; 4],
            call,
            y: 0,
            x: 0,
            top: 1,
        });
        assert!(idle.is_cancelled(), "an inspect stops idle work");
        assert!(!run.is_cancelled(), "an inspect does not stop the run");
        handle.send(Command::Cancel);
        assert!(run.is_cancelled());
    }
}
