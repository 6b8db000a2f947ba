"""Constants of the PhysioNet EGD (egd-cxr 1.0.0) and MIMIC-CXR file formats.

The headers are verbatim copies of PhysioNet's (egd-cxr 1.0.0); docs/dataset.md describes the files.
"""

MASTER_SHEET_COLUMNS = (
  'dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,'
  'image_bottom_pad,image_left_pad,image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,'
  'dx4_icd,dx5,dx5_icd,dx6,dx6_icd,dx7,dx7_icd,dx8,dx8_icd,dx9,dx9_icd,normal_reports,Normal,'
  'CHF,pneumonia,consolidation,enlarged_cardiac_silhouette,linear__patchy_atelectasis,'
  'lobar__segmental_collapse,'
  'not_otherwise_specified_opacity___pleural__parenchymal_opacity__,'
  'pleural_effusion_or_thickening,pulmonary_edema__hazy_opacity,normal_anatomically,'
  'elevated_hemidiaphragm,hyperaeration,vascular_redistribution,atelectasis__chx,'
  'cardiomegaly__chx,consolidation__chx,edema__chx,enlarged_cardiomediastinum__chx,'
  'fracture__chx,lung_lesion__chx,lung_opacity__chx,no_finding__chx,pleural_effusion__chx,'
  'pleural_other__chx,pneumonia__chx,pneumothorax__chx,support_devices__chx,'
  'cxr_exam_indication'
).split(',')
assert len(MASTER_SHEET_COLUMNS) == 59

GAZE_COLUMNS = (
  'SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,'
  'FPOGD,FPOGID,FPOGV,BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,'
  'BKDUR,BKPMIN,LPMM,LPMMV,RPMM,RPMMV,SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,'
  'Y_ORIGINAL'
).split(',')
assert len(GAZE_COLUMNS) == 37

CLASS_NAMES = ('Normal', 'CHF', 'pneumonia')

# Columns the builder needs; any other difference from the verbatim header is only logged.
MASTER_REQUIRED = ('dicom_id', 'path', 'study_id', 'patient_id') + CLASS_NAMES
FIXATIONS_REQUIRED = ('DICOM_ID', 'FPOGS', 'FPOGD', 'X_ORIGINAL', 'Y_ORIGINAL')

DICOM_ID_LENGTH = 44
CALIBRATION_ID_LENGTH = 39  # dicom_id[:-5] of the calibration screens.

EGD_DIR = 'egd-cxr/1.0.0'
JPG_DIR = 'mimic-cxr-jpg/2.0.0'
# MIMIC-CXR-JPG's per-image metadata (Rows, Columns: the image's size), in JPG_DIR.
METADATA_FILE = 'mimic-cxr-2.0.0-metadata.csv'
DICOM_DIR = 'mimic-cxr/2.0.0'

SCREEN_WIDTH = 1920
SCREEN_HEIGHT = 1080
DISPLAY_HEIGHT = 1024  # The letter-box canvas of image_preparation.py is 1920 x 1024.


def letterbox_pads(height: int, width: int) -> tuple[int, int, int, int]:
  """Official display pads ``(top, bottom, left, right)`` for an H x W image.

  ``image_preparation.py::resize_pad``: aspect-preserving resize by ``1024 / max(H, W)``, then
  zero borders to a 1920 x 1024 canvas.
  """
  ratio = DISPLAY_HEIGHT / max(height, width)
  new_h, new_w = int(height * ratio), int(width * ratio)
  top = (DISPLAY_HEIGHT - new_h) // 2
  left = (SCREEN_WIDTH - new_w) // 2
  return top, DISPLAY_HEIGHT - new_h - top, left, SCREEN_WIDTH - new_w - left


def screen_to_original(
  fpogx: float, fpogy: float, height: int, width: int, pads: tuple[int, int, int, int]
) -> tuple[int, int]:
  """Official screen-to-image mapping (``process_eye_gaze_table``), giving X/Y_ORIGINAL.

  ``height`` and ``width`` are the image size after padding each to an even number. Points off
  the displayed image map to ``int(scale * -1)``: small negative numbers.
  """
  top, bottom, left, right = pads
  eye_x = fpogx * SCREEN_WIDTH
  eye_y = fpogy * SCREEN_HEIGHT
  inside = left < eye_x < SCREEN_WIDTH - right and top < eye_y < SCREEN_HEIGHT - bottom
  x_rel, y_rel = (eye_x - left, eye_y - top) if inside else (-1.0, -1.0)
  x_orig = int(width / (SCREEN_WIDTH - left - right) * x_rel)
  y_orig = int(height / (SCREEN_HEIGHT - top - bottom) * y_rel)
  return x_orig, y_orig


def image_relpath(master_path: str, jpg: bool) -> str:
  """``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.dcm`` from the master sheet, as .jpg or .dcm."""
  if jpg and master_path.endswith('.dcm'):
    return master_path[:-4] + '.jpg'
  return master_path
