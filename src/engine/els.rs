//! The ELS machine: per pixel, a softmax over a bank of training patches, computed as one
//! head of attention with a streaming softmax.
//!
//! ‖q − a·k‖² = ‖q‖² − 2a·q·k + a²‖k‖², and ‖q‖² is constant within a pixel's softmax, so
//! the logits are (a/σ²)·q·k − (a²/2σ²)·‖k‖². Appending ‖k‖² to each key and −a/2 to each
//! (scaled) query turns that into a single matmul per key chunk.

use std::sync::Arc;

use rayon::prelude::*;

use burn::tensor::Tensor;

use super::control::{CancelToken, Cancelled, Control};
use super::denoiser::{
    Call, Denoised, Denoiser, DeviceGroup, ElsPath, GeometryKey, KeyChunk, OpTables, PixelMaps, to_host,
};
use super::els_op::{BLOCK_QUERIES, Block, OpParams};
use super::geometry::{centre_offsets, els_groups_cancellable};
use super::machine::Boundary;
use super::softmax::OnlineSoftmax;

impl Denoiser {
    /// ELS x̂₀; with `equivariant = false` each pixel only sees its own location (= LS).
    pub fn els(&mut self, x: &[f32], call: &Call, equivariant: bool, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let key = GeometryKey { patch: call.effective_patch(self.shape), boundary: call.boundary, equivariant };
        match self.els_path {
            ElsPath::HostKernel => return self.els_fused(x, call, key, ctl),
            ElsPath::Op => return self.els_op(x, call, key, ctl),
            ElsPath::BurnOps => {}
        }
        let groups = self.device_groups(key, ctl)?;
        let (c, hw) = (self.shape.c, self.shape.pixels());
        let mut x0 = vec![0f32; c * hw];
        let mut maps = call.maps.then(|| PixelMaps::empty(hw));
        let mut entropy_sum = self.fill_via_local(x, call, key.patch, &groups, &mut x0, &mut maps, ctl)?;
        let total: usize = groups.iter().filter(|g| g.streams()).map(|g| self.n.div_ceil(g.images_per_chunk)).sum();
        ctl.begin(total)?;
        let bank = self.key_bank(key, &groups, ctl)?;

        let d = c * key.patch * key.patch;
        let centre = self.int_tensor(&centre_offsets(c, key.patch));
        let xq = self.centred_query(x, a); // [1, C·H·W + 1]

        for (gi, group) in groups.iter().enumerate() {
            let q = group.host.pixels.len();
            if group.via_local {
                continue;
            }
            if group.host.key_pixels.is_empty() {
                self.fill_mean(&mut x0, &group.host.pixels);
                continue;
            }
            let queries = xq.clone().select(1, group.query_idx.clone()).reshape([q, d]); // [Q, D]
            let q_aug = augment_query(queries, a, s2); // [Q, D+1]
            let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
            for ci in 0..self.n.div_ceil(group.images_per_chunk) {
                let owned;
                let chunk = match &bank {
                    Some(bank) => &bank[gi][ci],
                    None => {
                        owned = self.key_chunk(group, &centre, ci);
                        &owned
                    }
                };
                let logits = q_aug.clone().matmul(chunk.keys_aug_t.clone()); // [Q, Kc]
                sm.update(logits, |p| p.matmul(chunk.values.clone())); // [Q, C]
                ctl.chunk_done()?;
            }
            let winner = sm.argmax();
            let (out, ent) = sm.finish().expect("every group has at least one chunk");
            let out = to_host(out); // [Q, C]
            for (qi, &px) in group.host.pixels.iter().enumerate() {
                for ch in 0..c {
                    x0[ch * hw + px] = out[qi * c + ch] + self.mean[ch];
                }
            }
            let ent = ent.map(to_host);
            if let Some(ent) = &ent {
                entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
            }
            if let (Some(m), Some(w), Some(e)) = (maps.as_mut(), winner, ent) {
                let cols: Vec<u64> = w.iter().map(|&v| v as u64).collect();
                m.set_group(&group.host, &cols, &e);
            }
        }
        Ok(Denoised { x0, entropy: (entropy_sum / hw as f64) as f32, maps })
    }

    /// The pixel groups of a geometry with their index tensors, built once (cancellable:
    /// at large P on a large image the tables take a while).
    pub(crate) fn device_groups(
        &mut self,
        key: GeometryKey,
        ctl: &Control,
    ) -> Result<Arc<Vec<DeviceGroup>>, Cancelled> {
        if let Some(g) = self.groups.get(&key) {
            return Ok(g.clone());
        }
        let cancelled = || ctl.check().is_err();
        let host = els_groups_cancellable(self.shape, key.patch, key.boundary, key.equivariant, &cancelled)
            .ok_or(Cancelled)?;
        let groups: Vec<DeviceGroup> = host
            .into_iter()
            .map(|host| {
                let per_image = host.keys_per_image().max(1);
                let images_per_chunk = (self.chunk_logits / (host.pixels.len() * per_image)).clamp(1, self.n);
                let via_local = key.equivariant
                    && key.boundary == Boundary::Zeros
                    && host.pixels.len() == 1
                    && host.key_pixels == host.pixels;
                let direct = !via_local
                    && key.boundary == Boundary::Zeros
                    && (1..=super::direct::MAX_KEYS).contains(&host.keys_per_image());
                DeviceGroup {
                    query_idx: self.int_tensor(&host.query_idx),
                    key_idx: self.int_tensor(&host.key_idx),
                    host,
                    images_per_chunk,
                    via_local,
                    direct,
                }
            })
            .collect();
        self.make_room_for_groups(Self::groups_bytes(&groups));
        let groups = Arc::new(groups);
        self.groups.insert(key, groups.clone());
        Ok(groups)
    }

    /// The keys of chunk `ci` of a group, cut from the training images on the device.
    pub(crate) fn key_chunk(&self, group: &DeviceGroup, centre: &Tensor<1, burn::tensor::Int>, ci: usize) -> KeyChunk {
        let n0 = ci * group.images_per_chunk;
        let nc = group.images_per_chunk.min(self.n - n0);
        let kg = group.host.keys_per_image();
        let d = group.host.key_idx.len() / kg;
        let keys = self
            .images
            .clone()
            .narrow(0, n0, nc) // [nc, C·H·W + 1]
            .select(1, group.key_idx.clone()) // [nc, Kg·D]
            .reshape([nc * kg, d]); // [Kc, D]
        let values = keys.clone().select(1, centre.clone()); // [Kc, C]
        let norms = keys.clone().square().sum_dim(1); // [Kc, 1]
        let keys_aug_t = Tensor::cat(vec![keys, norms], 1).transpose(); // [D+1, Kc]
        KeyChunk { keys_aug_t, values }
    }

    /// The whole key bank of a geometry, built once and kept while it fits the budget
    /// (`Ok(None)`: too big, stream the keys instead). The build checks for cancellation
    /// between chunks, so a slider move never waits for a bank it no longer needs.
    fn key_bank(
        &mut self,
        key: GeometryKey,
        groups: &[DeviceGroup],
        ctl: &Control,
    ) -> Result<Option<Arc<Vec<Vec<KeyChunk>>>>, Cancelled> {
        if let Some(b) = self.banks.get(&key) {
            return Ok(Some(b.clone()));
        }
        let c = self.shape.c;
        if !self.make_room(key) {
            return Ok(None);
        }
        let centre = self.int_tensor(&centre_offsets(c, key.patch));
        let mut bank: Vec<Vec<KeyChunk>> = Vec::with_capacity(groups.len());
        for g in groups {
            let mut chunks = Vec::new();
            if g.streams() {
                for ci in 0..self.n.div_ceil(g.images_per_chunk) {
                    ctl.check()?;
                    chunks.push(self.key_chunk(g, &centre, ci));
                }
            }
            bank.push(chunks);
        }
        let bank = Arc::new(bank);
        self.banks.insert(key, bank.clone());
        Ok(Some(bank))
    }
}

/// Keys per chunk on the fused CPU path: small enough that a cancel lands within a few ms.
const HOST_CHUNK_KEYS: usize = 16_384;

impl Denoiser {
    /// x̂₀ = the mean at `pixels`: they have no admissible training patch (circular windows
    /// larger than the image), so every path answers with the training set's mean there.
    fn fill_mean(&self, x0: &mut [f32], pixels: &[usize]) {
        let hw = self.shape.pixels();
        for &px in pixels {
            for (ch, &m) in self.mean.iter().enumerate() {
                x0[ch * hw + px] = m;
            }
        }
    }

    /// ELS through [`super::fused_cpu`]: same groups, same math, one fused pass per tile.
    fn els_fused(
        &mut self,
        x: &[f32],
        call: &Call,
        key: GeometryKey,
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let want_entropy = call.entropy || call.maps;
        let groups = self.device_groups(key, ctl)?;
        let (c, hw, len) = (self.shape.c, self.shape.pixels(), self.shape.len());
        let mut x0 = vec![0f32; len];
        let mut maps = call.maps.then(|| PixelMaps::empty(hw));
        let mut entropy_sum = self.fill_via_local(x, call, key.patch, &groups, &mut x0, &mut maps, ctl)?;
        let n = self.n;
        let per_chunk = move |g: &DeviceGroup| (HOST_CHUNK_KEYS / g.host.keys_per_image().max(1)).clamp(1, n);
        let total: usize = groups.iter().filter(|g| g.banked_on_host()).map(|g| self.n.div_ceil(per_chunk(g))).sum();
        ctl.begin(total + 1)?;
        let bank = self.host_bank(key, &groups, &per_chunk, ctl)?;
        let d = c * key.patch * key.patch;
        let da = d + 1;
        // x − a·m with the zero slot, like the device path's query row.
        let xc: Vec<f32> =
            x.iter().enumerate().map(|(i, &v)| (v as f64 - a * self.mean[i / hw] as f64) as f32).chain([0.0]).collect();
        let (scale, tail) = ((a / s2) as f32, (-a * a / (2.0 * s2)) as f32);
        // The small groups, in parallel over groups, straight from the images.
        let direct = super::direct::solve(
            self.shape,
            key.patch,
            &groups,
            |g| g.direct && g.streams(),
            &xc[..len],
            &self.host_centred,
            self.n,
            a / s2,
            -a * a / (2.0 * s2),
            ctl.token(),
        )?;
        for (group, solved) in groups.iter().zip(&direct) {
            let Some(solved) = solved else { continue };
            for (i, &px) in group.host.pixels.iter().enumerate() {
                for ch in 0..c {
                    x0[ch * hw + px] = solved.out[i * c + ch] + self.mean[ch];
                }
                if let Some(m) = maps.as_mut() {
                    (m.winner[px], m.source[px]) = solved.winner[i];
                    m.entropy[px] = solved.entropy[i];
                }
            }
            entropy_sum += solved.entropy.iter().map(|&e| e as f64).sum::<f64>();
        }
        ctl.chunk_done()?;
        for (gi, group) in groups.iter().enumerate() {
            let g = &group.host;
            let q = g.pixels.len();
            if !group.banked_on_host() && !g.key_pixels.is_empty() {
                continue;
            }
            if g.key_pixels.is_empty() {
                self.fill_mean(&mut x0, &g.pixels);
                continue;
            }
            let mut queries = vec![0f32; q * da]; // [Q, D+1]
            for i in 0..q {
                for t in 0..d {
                    queries[i * da + t] = xc[g.query_idx[i * d + t] as usize] * scale;
                }
                queries[i * da + d] = tail;
            }
            let mut state = super::fused_cpu::RowState::new(q, c, want_entropy);
            let ipc = per_chunk(group);
            for (ci, n0) in (0..self.n).step_by(ipc).enumerate() {
                let owned;
                let chunk = match &bank {
                    Some(bank) => &bank[gi][ci],
                    None => {
                        owned = self.host_chunk(g, key.patch, n0, ipc.min(self.n - n0), ctl.token().as_ref())?;
                        &owned
                    }
                };
                state.update(&queries, da, chunk);
                ctl.chunk_done()?;
            }
            let cols = state.argmax().to_vec();
            let (out, ent) = state.finish();
            for (i, &px) in g.pixels.iter().enumerate() {
                for ch in 0..c {
                    x0[ch * hw + px] = out[i * c + ch] + self.mean[ch];
                }
            }
            entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
            if let Some(m) = maps.as_mut() {
                m.set_group(g, &cols, &ent);
            }
        }
        Ok(Denoised { x0, entropy: if call.entropy { (entropy_sum / hw as f64) as f32 } else { 0.0 }, maps })
    }

    /// Keys of images n0..n0+nc at a group's key positions, with norms, on the host.
    /// Written row by row of the [D+1, K] layout (each image's keys are a contiguous run of
    /// every row) from a transposed index table: writing key by key, each value went to a
    /// different row 64 KB apart, and cutting a 600 MB bank at P = 11 took 2 s of TLB misses.
    /// Checks `cancel` once per image: one chunk at P = 15 is ~15 MB, which under load took
    /// longer than a slider move may wait.
    fn host_chunk(
        &self,
        g: &super::geometry::PixelGroup,
        p: usize,
        n0: usize,
        nc: usize,
        cancel: Option<&CancelToken>,
    ) -> Result<super::fused_cpu::HostChunk, Cancelled> {
        let (c, len) = (self.shape.c, self.shape.len());
        let kg = g.keys_per_image();
        let d = g.key_idx.len() / kg;
        let da = d + 1;
        let k = nc * kg;
        // idx_t[t][j]: the image offset of value t of key j; `len` (outside the image) reads
        // the zero appended to each image below.
        let mut idx_t = vec![0u32; d * kg];
        for j in 0..kg {
            for t in 0..d {
                idx_t[t * kg + j] = g.key_idx[j * d + t] as u32;
            }
        }
        let mut img = vec![0f32; len + 1];
        let mut keys_t = vec![0f32; da * k]; // [D+1, K]
        for n in 0..nc {
            if cancel.is_some_and(|t| t.is_cancelled()) {
                return Err(Cancelled);
            }
            img[..len].copy_from_slice(&self.host_centred[(n0 + n) * len..(n0 + n + 1) * len]);
            for t in 0..d {
                let row = &mut keys_t[t * k + n * kg..t * k + (n + 1) * kg];
                for (v, &idx) in row.iter_mut().zip(&idx_t[t * kg..(t + 1) * kg]) {
                    *v = img[idx as usize];
                }
            }
        }
        let (rows, norms) = keys_t.split_at_mut(d * k);
        for t in 0..d {
            for (nrm, &v) in norms.iter_mut().zip(&rows[t * k..(t + 1) * k]) {
                *nrm += v * v;
            }
        }
        let mut values_t = vec![0f32; c * k]; // [C, K]
        for (ch, &off) in centre_offsets(c, p).iter().enumerate() {
            values_t[ch * k..(ch + 1) * k].copy_from_slice(&keys_t[off as usize * k..(off as usize + 1) * k]);
        }
        Ok(super::fused_cpu::HostChunk { keys_t, values_t, len: k })
    }

    /// The host key bank of a geometry, kept between calls while it fits the budget
    /// (`Ok(None)`: too big, cut the keys per call). Cancellable between chunks: a bank can
    /// take seconds to cut at large P, and a slider move must not wait for it.
    fn host_bank(
        &mut self,
        key: GeometryKey,
        groups: &[DeviceGroup],
        per_chunk: &dyn Fn(&DeviceGroup) -> usize,
        ctl: &Control,
    ) -> Result<Option<Arc<Vec<Vec<super::fused_cpu::HostChunk>>>>, Cancelled> {
        if let Some(b) = self.host_banks.get(&key) {
            return Ok(Some(b.clone()));
        }
        if !self.make_room(key) {
            return Ok(None);
        }
        // Every chunk of every banked group, cut in parallel (the cutting is memory-bound
        // and was a tenth of a 20-step sample on one core).
        let n = self.n;
        let jobs: Vec<(usize, usize, usize)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.banked_on_host())
            .flat_map(|(gi, g)| {
                let ipc = per_chunk(g);
                (0..n).step_by(ipc).map(move |n0| (gi, n0, ipc.min(n - n0)))
            })
            .collect();
        let (this, token) = (&*self, ctl.token());
        let cut: Vec<Result<super::fused_cpu::HostChunk, Cancelled>> = jobs
            .par_iter()
            .map(|&(gi, n0, nc)| this.host_chunk(&groups[gi].host, key.patch, n0, nc, token.as_ref()))
            .collect();
        if cut.iter().any(|c| c.is_err()) {
            // Handing hundreds of MB back to the OS takes ~0.3 ms a MB, longer than a cancel
            // may: free the half-built bank on another thread.
            std::thread::spawn(move || drop(cut));
            return Err(Cancelled);
        }
        let mut bank: Vec<Vec<super::fused_cpu::HostChunk>> = groups.iter().map(|_| Vec::new()).collect();
        for (&(gi, _, _), chunk) in jobs.iter().zip(cut) {
            bank[gi].push(chunk?);
        }
        let bank = Arc::new(bank);
        self.host_banks.insert(key, bank.clone());
        Ok(Some(bank))
    }
}

/// [Q, D] → [Q, D+1]: queries scaled by a/σ², with −a²/(2σ²) appended to meet ‖k‖².
pub(crate) fn augment_query(queries: Tensor<2>, a: f64, s2: f64) -> Tensor<2> {
    let [q, _] = queries.dims();
    let tail = Tensor::<2>::full([q, 1], -a * a / (2.0 * s2), &queries.device()); // [Q, 1]
    Tensor::cat(vec![queries.mul_scalar(a / s2), tail], 1)
}

impl Denoiser {
    /// ELS (or LS, with `key.equivariant` off) through the fused op: one launch for the whole
    /// image, keys cut on the fly from the images.
    pub(crate) fn els_op(
        &mut self,
        x: &[f32],
        call: &Call,
        key: GeometryKey,
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let tables = self.op_tables(key, ctl)?;
        let (c, hw) = (self.shape.c, self.shape.pixels());
        let d = c * key.patch * key.patch;
        let mut x0 = vec![0f32; self.shape.len()];
        let mut maps = call.maps.then(|| PixelMaps::empty(hw));
        self.fill_mean(&mut x0, &tables.empty);
        ctl.begin(1)?;
        let mut entropy_sum = 0f64;
        if !tables.pixels.is_empty() {
            let q = tables.pixels.len();
            let queries = self.centred_query(x, a).select(1, tables.query_idx.clone()).reshape([q, d]); // [Q, D]
            let params = OpParams {
                a: a as f32,
                inv_two_s2: (0.5 / s2) as f32,
                splits: super::els_op::choose_splits(tables.n_blocks, self.n * tables.max_positions, d),
                channels: c,
                patch: key.patch,
            };
            let partials = super::els_op::els_partials(
                self.images.clone(),
                queries,
                tables.key_idx.clone(),
                tables.blocks.clone(),
                params,
            ); // [S, Q, 3 + C + 1]
            let won = call.maps.then(|| super::els_op::winners(partials.clone()));
            let (out, ent) = super::els_op::merge(partials); // [Q, C], [Q, 1]
            let out = to_host(out);
            for (i, &px) in tables.pixels.iter().enumerate() {
                for ch in 0..c {
                    x0[ch * hw + px] = out[i * c + ch] + self.mean[ch];
                }
            }
            let ent = to_host(ent);
            entropy_sum = ent.iter().map(|&e| e as f64).sum();
            if let (Some(m), Some(won)) = (maps.as_mut(), won) {
                for (i, &px) in tables.pixels.iter().enumerate() {
                    // Split s of a query with N·kn keys starts at key s·⌈N·kn/S⌉.
                    let (k_row0, kn) = (tables.query_keys[i].0 as usize, tables.query_keys[i].1 as usize);
                    let f = won[i].0 * (self.n * kn).div_ceil(params.splits) + won[i].1;
                    m.winner[px] = (f / kn) as u32;
                    m.source[px] = tables.key_row_pixel[k_row0 + f % kn];
                    m.entropy[px] = ent[i];
                }
            }
        }
        ctl.chunk_done()?;
        Ok(Denoised { x0, entropy: if call.entropy { (entropy_sum / hw as f64) as f32 } else { 0.0 }, maps })
    }

    /// The op's tables for a geometry, built from its pixel groups once and cached.
    fn op_tables(&mut self, key: GeometryKey, ctl: &Control) -> Result<Arc<OpTables>, Cancelled> {
        if let Some(t) = self.op_tables.get(&key) {
            return Ok(t.clone());
        }
        let groups = self.device_groups(key, ctl)?;
        let d = self.shape.c * key.patch * key.patch;
        let (mut query_idx, mut key_idx, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pixels, mut empty, mut max_positions) = (Vec::new(), Vec::new(), 0);
        let mut singles = Vec::new();
        let (mut query_keys, mut key_row_pixel) = (Vec::new(), Vec::new());
        for g in groups.iter().map(|g| &g.host) {
            if g.key_pixels.is_empty() {
                empty.extend_from_slice(&g.pixels);
            } else if g.pixels.len() == 1 && g.keys_per_image() == 1 {
                singles.push(g);
            } else {
                let k0 = key_idx.len() / d;
                key_idx.extend_from_slice(&g.key_idx);
                key_row_pixel.extend(g.key_pixels.iter().map(|&p| p as u32));
                max_positions = max_positions.max(g.keys_per_image());
                for (chunk, idx) in g.pixels.chunks(BLOCK_QUERIES).zip(g.query_idx.chunks(BLOCK_QUERIES * d)) {
                    blocks.push(Block { q0: pixels.len(), qn: chunk.len(), k0, kn: g.keys_per_image(), kstride: 0 });
                    pixels.extend_from_slice(chunk);
                    query_idx.extend_from_slice(idx);
                    query_keys.extend(chunk.iter().map(|_| (k0 as u32, g.keys_per_image() as u32)));
                }
            }
        }
        // Singleton groups (LS, and ELS pixels whose overhang no other pixel shares): query
        // u of a block reads key row k0 + u, so 64 of them fill a block.
        for chunk in singles.chunks(BLOCK_QUERIES) {
            ctl.check()?;
            blocks.push(Block { q0: pixels.len(), qn: chunk.len(), k0: key_idx.len() / d, kn: 1, kstride: 1 });
            for g in chunk {
                query_keys.push(((key_idx.len() / d) as u32, 1));
                key_row_pixel.push(g.key_pixels[0] as u32);
                pixels.push(g.pixels[0]);
                query_idx.extend_from_slice(&g.query_idx);
                key_idx.extend_from_slice(&g.key_idx);
            }
            max_positions = max_positions.max(1);
        }
        let rows: Vec<i64> = blocks.iter().flat_map(Block::row).collect();
        let bytes = (query_idx.len() + key_idx.len() + rows.len()) * 8 + pixels.len() * 8;
        let kpos = key_idx.len() / d;
        let tables = OpTables {
            query_idx: self.int_tensor(&query_idx),
            key_idx: self.int_tensor(&key_idx).reshape([kpos, d]),
            blocks: self.int_tensor(&rows).reshape([blocks.len(), 5]),
            pixels,
            empty,
            n_blocks: blocks.len(),
            query_keys,
            key_row_pixel,
            max_positions,
            bytes,
        };
        self.make_room_for_groups(bytes);
        let tables = Arc::new(tables);
        self.op_tables.insert(key, tables.clone());
        Ok(tables)
    }
}
